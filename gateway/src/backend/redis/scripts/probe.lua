-- The readiness probe: a write first, so a replica (a demoted master) refuses it with
-- READONLY and the node turns unready, then the echo its own pub/sub link must hear.
redis.call('SET', KEYS[1], ARGV[1], 'PX', 5000)
return redis.call('PUBLISH', KEYS[1], '1')
