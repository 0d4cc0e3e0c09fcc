// Mint a Supabase-style access token (HS256 with the project's legacy JWT secret) for trying the example
// without a Supabase project: `node mint-token.mjs <name> ['<app_metadata JSON>']`, secret in
// SUPABASE_JWT_SECRET. A real app gets the token from supabase-js (`session.access_token`).

import crypto from 'node:crypto';

const [name, appMetadata = '{}'] = process.argv.slice(2);
const secret = process.env.SUPABASE_JWT_SECRET;
if (!name || !secret) {
  console.error("usage: SUPABASE_JWT_SECRET=… node mint-token.mjs <name> ['<app_metadata JSON>']");
  process.exit(64);
}
const now = Math.floor(Date.now() / 1000);
const claims = {
  sub: crypto.randomUUID(),
  aud: 'authenticated',
  role: 'authenticated',
  aal: 'aal1',
  is_anonymous: false,
  iat: now,
  exp: now + 3600,
  email: `${name}@example.com`,
  app_metadata: { provider: 'email', ...JSON.parse(appMetadata) },
  user_metadata: { name },
};
const b64url = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
const input = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url(claims)}`;
console.log(`${input}.${crypto.createHmac('sha256', secret).update(input).digest('base64url')}`);
