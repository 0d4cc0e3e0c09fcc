// The test page's service worker: ably-js's push.activate() registers it and subscribes through its
// pushManager. A notification it would show is the receiver's business in these tests.
self.addEventListener('push', (event) => {
  event.waitUntil(Promise.resolve());
});
