// A real OAuth 2.0 authorization server for the keeper's integration tests: oidc-provider (the
// OpenID-certified Node.js server), configured from a JSON file and served on loopback.
//
//   node server.mjs CONFIG.json
//
// OIDC_PROVIDER_MODULES names the node_modules folder oidc-provider was installed into (the test
// harness runs `npm ci` into a cache folder, not next to this file). On start the server prints
// one JSON line on stdout, {"issuer": "...", "token_endpoint": "..."}, and it exits when its
// standard input closes, so a test that dies never leaves it behind.
//
// Besides the server's own endpoints (token, introspection, revocation), a small admin API under
// /_admin/ (bearer `admin_token` from the config) lets a test do what a browser and a user would:
//   POST /_admin/mint    {client_id, scope, resources?: {uri: scope}, account_id?}
//                        -> {refresh_token, grant_id}: a grant and a refresh token minted through
//                        the server's own models (Grant, RefreshToken), as a code exchange would.
//   POST /_admin/revoke  {grant_id}: the user revokes the application's access.
//   POST /_admin/expire  {refresh_token}: the refresh token's lifetime ends now.
//   POST /_admin/state   {refresh_token} -> {found, consumed, expired, grant}: the token's fate.
//   GET  /_admin/log     -> every token endpoint request: grant type, client authentication,
//                        parameter names, outcome, the client assertion's header and claims, and
//                        the SHA-256 of the refresh token presented (never a token or secret
//                        value): a test tells from it whether a token was ever presented twice.
//
// Config (JSON): {admin_token, rotate, access_ttl, refresh_ttl, clients: [client metadata…],
// resources: {uri: scope}}. A client may give `certificate_pem` instead of `jwks`: its public
// key is taken from the certificate, as Entra takes it from an uploaded certificate.

import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

// stdout carries the one ready line; everything the library says goes to stderr, so nothing
// writes to a stdout the test has stopped reading.
console.log = console.error;
console.info = console.error;

const modules = process.env.OIDC_PROVIDER_MODULES;
if (!modules) {
  console.error('OIDC_PROVIDER_MODULES is not set: the folder oidc-provider was installed into');
  process.exit(2);
}
const { default: Provider, errors } = await import(
  pathToFileURL(join(modules, 'oidc-provider', 'lib', 'index.js')).href
);

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const log = [];

function publicJwks(client) {
  if (!client.certificate_pem) return client.jwks;
  const cert = new X509Certificate(client.certificate_pem);
  const jwk = cert.publicKey.export({ format: 'jwk' });
  return { keys: [{ ...jwk, use: 'sig' }] };
}

const clients = config.clients.map((c) => {
  const { certificate_pem: _pem, ...metadata } = c;
  return {
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: ['https://instance.example.com/oauth_redirect.do'],
    ...metadata,
    jwks: publicJwks(c),
  };
});

const resources = config.resources ?? {};
const oidcScopes = ['openid', 'offline_access', 'profile', 'email', 'api:read', 'api:write'];

const http = createServer();
await new Promise((resolve) => { http.listen(0, '127.0.0.1', resolve); });
const issuer = `http://127.0.0.1:${http.address().port}`;

const provider = new Provider(issuer, {
  clients,
  scopes: oidcScopes,
  // Rotation on every use, with the server's reuse detection: a consumed refresh token presented
  // again revokes the whole grant (every token of the family).
  rotateRefreshToken: config.rotate !== false,
  ttl: {
    AccessToken: config.access_ttl ?? 3600,
    RefreshToken: config.refresh_ttl ?? 14 * 86400,
    Grant: 365 * 86400,
    Session: 86400,
    Interaction: 3600,
  },
  features: {
    introspection: { enabled: true },
    revocation: { enabled: true },
    devInteractions: { enabled: false },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => undefined,
      useGrantedResource: () => false,
      getResourceServerInfo: (_ctx, resource) => {
        if (!(resource in resources)) throw new errors.InvalidTarget();
        // Opaque, so the introspection endpoint can vouch for it.
        return { scope: resources[resource], accessTokenFormat: 'opaque', audience: resource };
      },
    },
  },
  cookies: { keys: ['test-only-cookie-key'] },
  findAccount: (_ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
});

function decodeJwtPart(part) {
  try {
    return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
  } catch {
    return null;
  }
}

function record(ctx, outcome) {
  const params = ctx.oidc?.params ?? {};
  const entry = {
    grant_type: params.grant_type ?? null,
    client_id: ctx.oidc?.client?.clientId ?? params.client_id ?? null,
    auth_method: ctx.oidc?.client?.clientAuthMethod ?? null,
    basic_auth: (ctx.get('authorization') || '').toLowerCase().startsWith('basic '),
    // Names only, never values: the form carries the refresh token and maybe a secret.
    params: Object.keys(params).filter((k) => params[k] !== undefined).sort(),
    scope: params.scope ?? null,
    resource: params.resource ?? null,
    ...outcome,
  };
  if (typeof params.refresh_token === 'string') {
    entry.refresh_token_sha256 = createHash('sha256').update(params.refresh_token).digest('hex');
  }
  if (typeof params.client_assertion === 'string') {
    const [header, payload] = params.client_assertion.split('.');
    entry.assertion = { header: decodeJwtPart(header), claims: decodeJwtPart(payload) };
  }
  log.push(entry);
}

provider.on('grant.success', (ctx) => {
  record(ctx, { ok: true, scope_granted: ctx.body?.scope ?? null });
});
provider.on('grant.error', (ctx, err) => {
  record(ctx, {
    ok: false, error: err.error, error_description: err.error_description, error_detail: err.error_detail ?? null,
  });
});
provider.on('grant.revoked', (_ctx, grantId) => {
  log.push({ event: 'grant.revoked', grant_id: grantId });
});
provider.on('server_error', (_ctx, err) => {
  console.error('oidc-provider server_error:', err);
});

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : {};
}

function send(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

const epoch = () => Math.floor(Date.now() / 1000);

async function admin(req, res) {
  if (req.headers.authorization !== `Bearer ${config.admin_token}`) {
    send(res, 401, { error: 'admin token required' });
    return;
  }
  const path = new URL(req.url, issuer).pathname;
  if (req.method === 'GET' && path === '/_admin/log') {
    send(res, 200, log);
    return;
  }
  const body = await readJson(req);
  switch (path) {
    case '/_admin/mint': {
      const client = await provider.Client.find(body.client_id);
      if (!client) {
        send(res, 400, { error: `unknown client ${body.client_id}` });
        return;
      }
      const accountId = body.account_id ?? 'user-1';
      const grant = new provider.Grant({ accountId, clientId: client.clientId });
      grant.addOIDCScope(body.scope);
      const resourceList = Object.keys(body.resources ?? {});
      for (const [uri, scope] of Object.entries(body.resources ?? {})) {
        grant.addResourceScope(uri, scope);
      }
      const grantId = await grant.save();
      const refreshToken = new provider.RefreshToken({
        accountId,
        client,
        grantId,
        gty: 'authorization_code',
        scope: [body.scope, ...Object.values(body.resources ?? {})].filter(Boolean).join(' '),
        resource: resourceList.length === 1 ? resourceList[0] : (resourceList.length ? resourceList : undefined),
        authTime: epoch(),
      });
      const value = await refreshToken.save();
      send(res, 200, { refresh_token: value, grant_id: grantId });
      return;
    }
    case '/_admin/revoke': {
      await Promise.all([
        provider.AccessToken.revokeByGrantId(body.grant_id),
        provider.RefreshToken.revokeByGrantId(body.grant_id),
        provider.Grant.adapter.destroy(body.grant_id),
      ]);
      send(res, 200, { revoked: body.grant_id });
      return;
    }
    case '/_admin/expire': {
      const token = await provider.RefreshToken.find(body.refresh_token, { ignoreExpiration: true });
      if (!token) {
        send(res, 404, { error: 'no such refresh token' });
        return;
      }
      // The memory adapter hands out the stored payload itself.
      const stored = await provider.RefreshToken.adapter.find(token.jti);
      stored.exp = epoch() - 60;
      send(res, 200, { expired: true });
      return;
    }
    case '/_admin/state': {
      const token = await provider.RefreshToken.find(body.refresh_token, { ignoreExpiration: true });
      if (!token) {
        send(res, 200, { found: false });
        return;
      }
      const grant = await provider.Grant.find(token.grantId);
      send(res, 200, {
        found: true,
        consumed: !!token.consumed,
        expired: token.isExpired,
        grant: !!grant,
        scope: token.scope,
        rotations: token.rotations ?? 0,
      });
      return;
    }
    default:
      send(res, 404, { error: 'unknown admin path' });
  }
}

const callback = provider.callback();
http.on('request', (req, res) => {
  if (req.url.startsWith('/_admin/')) {
    admin(req, res).catch((err) => send(res, 500, { error: String(err) }));
  } else {
    callback(req, res);
  }
});

process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();

process.stdout.write(`${JSON.stringify({ issuer, token_endpoint: `${issuer}/token` })}\n`);
