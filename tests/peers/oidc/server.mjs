// Test-only OAuth 2.0 / OpenID Connect authorization server for the vault test suite.
//
//   node server.mjs --port 12345 [--issuer http://127.0.0.1:12345] [--watch-stdin]
//
// Prints exactly one line `READY <issuer>` on stdout once it listens (on 127.0.0.1 only).
// Everything lives in memory: a restart invalidates every token, client and user session.
// Not for production: test passwords, test-only admin endpoints under /test/.

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

// ---------------------------------------------------------------------------------------------
// Command line

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    issuer: { type: 'string' },
    // Exit when stdin closes: the test process holds the other end, so a killed pytest never
    // leaves an orphaned server behind.
    'watch-stdin': { type: 'boolean', default: false },
  },
});
if (!args.port || !/^\d+$/.test(args.port)) {
  console.error('usage: node server.mjs --port <port> [--issuer <url>] [--watch-stdin]');
  process.exit(2);
}
const HOST = '127.0.0.1';
const PORT = Number(args.port);
const ISSUER = args.issuer ?? `http://${HOST}:${PORT}`;

// ---------------------------------------------------------------------------------------------
// Test data: users, clients, scopes

const USERS = new Map([
  ['alice@example.test', 'alice-password-123'],
  ['bob@example.test', 'bob-password-123'],
  // A user name without a domain, as some mail servers' logins are: the mailbox is
  // carol@example.test (her email claim), the token's subject `carol`.
  ['carol', 'carol-password-123'],
]);

const MAIL_SCOPES = ['mail.imap', 'mail.smtp', 'mail.pop', 'graph.mail'];
const APP_SCOPE = 'mail.app'; // client credentials only (no user)
// email and profile: the ID token then names who signed in (email, preferred_username).
const SCOPES = ['openid', 'offline_access', 'email', 'profile', ...MAIL_SCOPES, APP_SCOPE];

const USER_GRANTS = ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'];

// RFC 8707 resource servers: a request naming one of these as `resource` gets an access token that
// is a JWT for it (aud = the identifier, scope = the requested scopes this server accepts), which a
// mail server can check locally (tests/peers/dovecot_peer.py start_jwt). Any other resource is
// refused with invalid_target. Requests without `resource` are unaffected: opaque tokens as before.
// The mail scopes stay in SCOPES too, so that without a resource they still go into the (opaque,
// introspectable) token as they always did.
const MAIL_RESOURCE = 'https://mail.example.test'; // the whole mail service: IMAP, POP3, submission
const RESOURCE_SERVERS = new Map([
  [MAIL_RESOURCE, 'mail.imap mail.pop mail.smtp'],
  // One per protocol, for clients that ask a resource per protocol.
  ['imap://mail.example.test', 'mail.imap'],
  ['pop://mail.example.test', 'mail.pop'],
  ['smtp://mail.example.test', 'mail.smtp'],
  // Another mail service with the same scopes: its tokens carry mail.imap etc. but the wrong
  // audience for the suite's Dovecot.
  ['https://other-mail.example.test', 'mail.imap mail.pop mail.smtp'],
]);
const ACCESS_TOKEN_KID = 'test-rs256'; // the signing key below; JWT access tokens name it as kid

// application_type "native" is what lets oidc-provider accept http://127.0.0.1:<any port>/callback
// for the registered http://127.0.0.1/callback (RFC 8252 section 7.3); web clients need an exact match.
const loopbackClient = {
  application_type: 'native',
  redirect_uris: ['http://127.0.0.1/callback'],
  response_types: ['code'],
};

// Authorization codes of these clients are stored already expired (see the adapter below).
const EXPIRED_CODE_CLIENTS = new Set(['vault-expired-codes']);
// May introspect every client's tokens (other clients only their own).
const INTROSPECTORS = new Set(['dovecot']);

const CLIENTS = [
  {
    ...loopbackClient,
    client_id: 'vault-basic',
    client_secret: 'basic-secret-value-0123456789',
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: [...USER_GRANTS, 'client_credentials'],
    scope: SCOPES.join(' '),
  },
  {
    ...loopbackClient,
    client_id: 'vault-post',
    client_secret: 'post-secret-value-0123456789',
    token_endpoint_auth_method: 'client_secret_post',
    grant_types: [...USER_GRANTS, 'client_credentials'],
    scope: SCOPES.join(' '),
  },
  {
    ...loopbackClient,
    client_id: 'vault-expired-codes',
    client_secret: 'expired-secret-0123456789',
    token_endpoint_auth_method: 'client_secret_post',
    grant_types: ['authorization_code', 'refresh_token'],
    scope: ['openid', 'offline_access', 'email', 'profile', ...MAIL_SCOPES].join(' '),
  },
  {
    // Resource server (Dovecot's passdb oauth2): only calls the introspection endpoint.
    client_id: 'dovecot',
    client_secret: 'dovecot-secret-0123456789',
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: [],
    response_types: [],
    redirect_uris: [],
  },
];

// ---------------------------------------------------------------------------------------------
// Storage: a plain in-memory adapter (oidc-provider's own one is an LRU capped at 1000 entries,
// which a long test session could overflow). It also gives the /test/ endpoints a way to find
// every grant of a user.

const GRANTABLE = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest', 'PreAuthorizedCode']);
const store = new Map(); // `${model}:${id}` -> { payload, expiresAt (ms) }
const now = () => Math.floor(Date.now() / 1000);

function live(key) {
  const entry = store.get(key);
  if (!entry) return undefined;
  if (entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
    store.delete(key);
    return undefined;
  }
  return entry.payload;
}

function* entriesOf(model) {
  for (const key of [...store.keys()]) {
    if (key.startsWith(`${model}:`)) {
      const payload = live(key);
      if (payload) yield [key.slice(model.length + 1), payload];
    }
  }
}

class MemoryAdapter {
  constructor(model) { this.model = model; }

  key(id) { return `${this.model}:${id}`; }

  async upsert(id, payload, expiresIn) {
    if (this.model === 'AuthorizationCode' && EXPIRED_CODE_CLIENTS.has(payload.clientId)) {
      // ttl.AuthorizationCode must be a positive integer, so the shortest real lifetime is 1 s and
      // a test would have to sleep. Storing the code with exp = iat makes the token endpoint see an
      // expired code at once: 400 invalid_grant, deterministic.
      payload = { ...payload, exp: payload.iat };
    }
    // Keep entries a little past their exp so oidc-provider itself answers "expired", not "not found".
    const expiresAt = expiresIn ? Date.now() + (expiresIn + 60) * 1000 : undefined;
    store.set(this.key(id), { payload, expiresAt });
  }

  async find(id) { return live(this.key(id)); }

  async findByUid(uid) {
    for (const [, payload] of entriesOf(this.model)) if (payload.uid === uid) return payload;
    return undefined;
  }

  async findByUserCode(userCode) {
    for (const [, payload] of entriesOf(this.model)) if (payload.userCode === userCode) return payload;
    return undefined;
  }

  async consume(id) {
    const payload = live(this.key(id));
    if (payload) payload.consumed = now();
  }

  async destroy(id) { store.delete(this.key(id)); }

  async revokeByGrantId(grantId) {
    for (const [id, payload] of entriesOf(this.model)) {
      if (payload.grantId === grantId) store.delete(this.key(id));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Provider configuration

// A fresh signing key per run: ID tokens are real RS256 JWTs, nothing is checked in.
const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: ACCESS_TOKEN_KID, use: 'sig', alg: 'RS256' };

const configuration = {
  adapter: MemoryAdapter,
  clients: CLIENTS,
  jwks: { keys: [signingKey] },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  scopes: SCOPES,
  claims: {
    acr: null, sid: null, auth_time: null, iss: null,
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['preferred_username', 'name'],
  },
  // The scope's claims go into the ID token of the code and device flows too (by default only
  // into userinfo), as Microsoft and Google do: vault reads who signed in from the ID token.
  conformIdTokenClaims: false,

  async findAccount(ctx, sub) {
    if (!USERS.has(sub)) return undefined; // tokens of unknown subjects are rejected
    return {
      accountId: sub,
      async claims() {
        return {
          sub, email: sub.includes('@') ? sub : `${sub}@example.test`, email_verified: true,
          preferred_username: sub,
          name: sub.split('@')[0],
        };
      },
    };
  },

  // PKCE on every authorization request (oidc-provider 9 only supports S256).
  pkce: { required: () => true },

  // Refresh tokens for offline_access and for every mail scope, for any client allowed the grant.
  async issueRefreshToken(ctx, client, source) {
    return client.grantTypeAllowed('refresh_token')
      && (source.scopes.has('offline_access') || MAIL_SCOPES.some((s) => source.scopes.has(s)));
  },
  // Rotate on every use. Replaying a rotated-out token then hits oidc-provider's reuse
  // detection: 400 invalid_grant and the whole grant (newest refresh + access tokens) is revoked.
  rotateRefreshToken: true,
  // Tokens outlive the browser session that created them (mail clients run unattended).
  expiresWithSession: async () => false,

  ttl: {
    AccessToken: 60 * 60,
    AuthorizationCode: 60,
    ClientCredentials: 10 * 60,
    DeviceCode: 10 * 60,
    IdToken: 60 * 60,
    RefreshToken: 14 * 24 * 60 * 60,
    Interaction: 60 * 60,
    Session: 14 * 24 * 60 * 60,
    Grant: 14 * 24 * 60 * 60,
  },

  interactions: { url: async (ctx, interaction) => `/interaction/${interaction.uid}` },

  clientBasedCORS: () => false,

  // Debian's Dovecot 2.3.19 (lib-oauth2/oauth2-jwt.c, oauth2_jwt_header_process) refuses a JWT whose
  // header typ is not exactly "JWT" ("Cannot find 'typ' field"); oidc-provider writes RFC 9068's
  // "at+jwt" unless a customizer overrides the header (lib/models/formats/jwt.js).
  formats: {
    customizers: {
      async jwt(ctx, token, jwt) {
        jwt.header = { ...jwt.header, typ: 'JWT' };
      },
    },
  },

  features: {
    devInteractions: { enabled: false }, // replaced by the password-checking pages below
    // Enabled by default in oidc-provider 9; what it does with `resource` (verified in
    // node_modules/oidc-provider/lib, 9.13):
    // - authorize and device authorization: every `resource` (repeatable) is checked here and kept
    //   on the code / device code (shared/check_resource.js). Without one, defaultResource (kept at
    //   its default: none) applies and the request is as before.
    // - token (authorization_code, device_code, refresh_token): `resource` must be one of those
    //   granted (else invalid_target), and only one per request. Without it, the granted resource is
    //   used only when it is a single one AND the scope lacks openid (helpers/resolve_resource.js,
    //   useGrantedResource kept at its default false); with openid the answer is an opaque token
    //   without audience, as if no resource had been asked. A refresh must therefore repeat it.
    // - the token's scope is the requested scopes this resource server accepts (the OIDC scopes
    //   openid, offline_access, email, profile are dropped from it), also in the token response.
    resourceIndicators: {
      enabled: true,
      async getResourceServerInfo(ctx, resourceIndicator) {
        const scope = RESOURCE_SERVERS.get(resourceIndicator);
        if (scope === undefined) throw new errors.InvalidTarget();
        return {
          scope,
          audience: resourceIndicator,
          accessTokenFormat: 'jwt',
          accessTokenTTL: 60 * 60,
          jwt: { sign: { alg: 'RS256', kid: ACCESS_TOKEN_KID } },
        };
      },
    },
    clientCredentials: { enabled: true },
    introspection: {
      enabled: true,
      async allowedPolicy(ctx, client, token) {
        return INTROSPECTORS.has(client.clientId) || token.clientId === client.clientId;
      },
    },
    revocation: {
      enabled: true,
      async allowedPolicy(ctx, client, token) {
        if (token.clientId !== client.clientId) {
          throw new errors.InvalidRequest('client is not authorized to revoke the presented token');
        }
        return true;
      },
    },
    deviceFlow: {
      enabled: true,
      // Same pages as the defaults, minus external fonts, plus ids a headless browser can target.
      async userCodeInputSource(ctx, form, out, err) {
        const msg = err ? `<p id="error">${esc(err.userCode ? 'The code you entered is incorrect.' : err.message)}</p>` : '';
        ctx.body = page('Enter code', `${msg}
${form.replace('name="user_code"', 'id="user_code" name="user_code"')}
<button id="continue" type="submit" form="op.deviceInputForm">Continue</button>`);
      },
      async userCodeConfirmSource(ctx, form, client, deviceInfo, userCode) {
        ctx.body = page('Confirm device', `<p>Client <strong>${esc(client.clientId)}</strong> shows the code
<code id="confirm-code">${esc(userCode)}</code></p>
${form}
<button id="confirm" type="submit" form="op.deviceConfirmForm">Continue</button>
<button id="abort" type="submit" form="op.deviceConfirmForm" name="abort" value="yes">Abort</button>`);
      },
      async successSource(ctx) {
        ctx.body = page('Device signed in', '<p id="success">Sign-in successful, you can close this page.</p>');
      },
    },
  },

  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Error', `<pre id="error">${esc(JSON.stringify(out, null, 2))}</pre>`);
  },
};

const provider = new Provider(ISSUER, configuration);

// oidc-provider hides the reason behind e.g. "invalid_grant: grant request is invalid"; log it to
// stderr so a failing test can show why.
for (const event of ['grant.error', 'introspection.error', 'revocation.error', 'authorization.error',
  'device_authorization.error', 'server_error', 'code_verification.error']) {
  provider.on(event, (ctx, err) => {
    console.error(`[oidc] ${event}: ${err.message}${err.error_detail ? ` (${err.error_detail})` : ''}`);
  });
}

// oidc-provider treats client_secret_basic and client_secret_post as interchangeable (either one
// passes for a client registered with the other). The suite must prove the vault uses the method
// registered for the client, so enforce it: a mismatch is 401 invalid_client, as from the provider.
const AUTH_METHOD = new Map(CLIENTS.map((c) => [c.client_id, c.token_endpoint_auth_method]));
const CLIENT_AUTH_PATHS = new Set(['/token', '/token/introspection', '/token/revocation', '/device/auth',
  '/request']);

provider.use(async (ctx, next) => {
  if (ctx.method !== 'POST' || !CLIENT_AUTH_PATHS.has(ctx.path) || !ctx.is('application/x-www-form-urlencoded')) {
    return next();
  }
  // Reading the body here consumes the stream; oidc-provider then takes the parsed copy from
  // req.body (it logs a one-time "already parsed request body" warning for that).
  const raw = (await readBody(ctx.req)).toString('utf8');
  ctx.req.body = raw;
  const form = new URLSearchParams(raw);
  const basic = /^basic\s+(\S+)$/i.exec(ctx.get('authorization'));
  let used;
  let clientId;
  if (basic && !form.has('client_secret')) {
    used = 'client_secret_basic';
    const decoded = Buffer.from(basic[1], 'base64').toString('utf8');
    clientId = safeDecode(decoded.slice(0, Math.max(decoded.indexOf(':'), 0)));
  } else if (!basic && form.has('client_secret')) {
    used = 'client_secret_post';
    clientId = form.get('client_id');
  }
  const registered = AUTH_METHOD.get(clientId);
  if (used && registered && used !== registered) {
    console.error(`[oidc] ${ctx.path}: client ${clientId} used ${used}, registered ${registered}`);
    ctx.status = 401;
    if (used === 'client_secret_basic') {
      ctx.set('WWW-Authenticate', `Basic realm="${ISSUER}", error="invalid_client", error_description="client authentication failed"`);
    }
    ctx.set('Cache-Control', 'no-store');
    ctx.body = { error: 'invalid_client', error_description: 'client authentication failed' };
    return undefined;
  }
  return next();
});

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 56 * 1024) throw new Error('request body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function safeDecode(value) {
  try {
    return decodeURIComponent(value.replace(/\+/g, ' '));
  } catch {
    return value;
  }
}

// ---------------------------------------------------------------------------------------------
// Login + consent pages (instead of the dev interactions, which accept any password)

function esc(value) {
  return String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${esc(title)}</title></head>
<body><h1>${esc(title)}</h1>
${body}
</body></html>`;
}

function send(res, status, body, type = 'text/html; charset=utf-8') {
  res.statusCode = status;
  res.setHeader('Content-Type', type);
  res.setHeader('Cache-Control', 'no-store');
  res.end(body);
}

async function readForm(req) {
  return new URLSearchParams((await readBody(req)).toString('utf8'));
}

function loginPage(uid, details, error) {
  return page('Sign in', `<p>Client <strong>${esc(details.params.client_id)}</strong> asks for
<code id="scope">${esc(details.params.scope ?? '')}</code></p>
${error ? `<p id="error">${esc(error)}</p>` : ''}
<form id="login-form" method="post" action="/interaction/${esc(uid)}/login">
  <label>Email <input id="username" name="username" type="text" autocomplete="username" autofocus></label>
  <label>Password <input id="password" name="password" type="password" autocomplete="current-password"></label>
  <button id="login" type="submit">Sign in</button>
</form>`);
}

function consentPage(uid, details) {
  const { missingOIDCScope = [], missingResourceScopes = {} } = details.prompt.details;
  const scopes = [...missingOIDCScope, ...Object.values(missingResourceScopes).flat()];
  return page('Consent', `<p><strong>${esc(details.session.accountId)}</strong>, allow
<strong>${esc(details.params.client_id)}</strong> access to:</p>
<ul id="scopes">${scopes.map((s) => `<li>${esc(s)}</li>`).join('')}</ul>
<form id="consent-form" method="post" action="/interaction/${esc(uid)}/confirm">
  <button id="consent" type="submit">Allow</button>
</form>
<form id="deny-form" method="post" action="/interaction/${esc(uid)}/abort">
  <button id="deny" type="submit">Deny</button>
</form>`);
}

async function handleInteraction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) {
    send(res, 400, page('Error', '<p id="error">interaction mismatch</p>'));
    return;
  }
  const { prompt } = details;

  if (req.method === 'GET' && !action) {
    send(res, 200, prompt.name === 'login' ? loginPage(uid, details) : consentPage(uid, details));
    return;
  }
  if (req.method !== 'POST') {
    send(res, 405, page('Error', '<p id="error">method not allowed</p>'));
    return;
  }

  if (action === 'login' && prompt.name === 'login') {
    const form = await readForm(req);
    const username = form.get('username') ?? '';
    const password = form.get('password') ?? '';
    const expected = USERS.get(username);
    const ok = expected !== undefined && crypto.timingSafeEqual(
      crypto.createHash('sha256').update(password).digest(),
      crypto.createHash('sha256').update(expected).digest(),
    );
    if (!ok) {
      send(res, 200, loginPage(uid, details, 'Invalid email or password.'));
      return;
    }
    await provider.interactionFinished(req, res, { login: { accountId: username } },
      { mergeWithLastSubmission: false });
    return;
  }

  if (action === 'confirm' && prompt.name === 'consent') {
    // Grant exactly what the client asked for and has not been granted yet.
    const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = prompt.details;
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
    if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return;
  }

  if (action === 'abort') {
    await provider.interactionFinished(req, res,
      { error: 'access_denied', error_description: 'End-User aborted interaction' },
      { mergeWithLastSubmission: false });
    return;
  }

  send(res, 400, page('Error', `<p id="error">unexpected ${esc(action)} during ${esc(prompt.name)}</p>`));
}

// ---------------------------------------------------------------------------------------------
// Test-only admin endpoints

// "Consent revoked at the provider": delete the user's grants (optionally for one client) and
// every token, code and device code issued under them.
async function revokeGrants(sub, clientId) {
  const grantIds = [];
  for (const [id, grant] of entriesOf('Grant')) {
    if (grant.accountId === sub && (!clientId || grant.clientId === clientId)) grantIds.push(id);
  }
  for (const grantId of grantIds) {
    for (const model of GRANTABLE) await new MemoryAdapter(model).revokeByGrantId(grantId);
    await new MemoryAdapter('Grant').destroy(grantId);
  }
  return grantIds.length;
}

// Expire every outstanding authorization code now (for codes of clients other than
// vault-expired-codes, whose codes are born expired).
function expireCodes() {
  let count = 0;
  for (const [, payload] of entriesOf('AuthorizationCode')) {
    if (payload.exp > now()) {
      payload.exp = payload.iat;
      count += 1;
    }
  }
  return count;
}

// "The access token expired": make the user's outstanding access tokens (optionally of one client)
// expired now, as if their TTL had passed, so introspection answers {"active":false} at once. Refresh
// tokens and grants stay valid: refreshing gets a fresh access token.
function expireAccessTokens(sub, clientId) {
  let count = 0;
  for (const [, payload] of entriesOf('AccessToken')) {
    if (payload.accountId === sub && (!clientId || payload.clientId === clientId) && payload.exp > now()) {
      payload.exp = payload.iat; // exp <= now: oidc-provider treats the token as expired
      count += 1;
    }
  }
  return count;
}

// Sign any JWT with the provider's access-token key: lets a test hand a mail server a token that is
// validly signed yet expired, of another issuer, etc. (a real token's exp cannot be moved, and no
// test may sleep). Body: {"payload": {...}, "header": {...}}; the header defaults to what the
// provider's own JWT access tokens carry (alg RS256, typ JWT, kid).
function signJwt(header, payload) {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const input = `${b64({ alg: 'RS256', typ: 'JWT', kid: ACCESS_TOKEN_KID, ...header })}.${b64(payload)}`;
  return `${input}.${crypto.sign('sha256', Buffer.from(input), privateKey).toString('base64url')}`;
}

async function handleTest(req, res, url) {
  if (req.method !== 'POST') {
    send(res, 405, '{"error":"method_not_allowed"}', 'application/json');
    return;
  }
  if (url.pathname === '/test/revoke-grants') {
    const sub = url.searchParams.get('sub');
    if (!sub) {
      send(res, 400, '{"error":"sub is required"}', 'application/json');
      return;
    }
    const revoked = await revokeGrants(sub, url.searchParams.get('client_id'));
    send(res, 200, JSON.stringify({ revoked_grants: revoked }), 'application/json');
    return;
  }
  if (url.pathname === '/test/expire-access-tokens') {
    const sub = url.searchParams.get('sub');
    if (!sub) {
      send(res, 400, '{"error":"sub is required"}', 'application/json');
      return;
    }
    const expired = expireAccessTokens(sub, url.searchParams.get('client_id'));
    send(res, 200, JSON.stringify({ expired_access_tokens: expired }), 'application/json');
    return;
  }
  if (url.pathname === '/test/sign-jwt') {
    let body;
    try {
      body = JSON.parse((await readBody(req)).toString('utf8'));
    } catch {
      body = undefined;
    }
    if (!body || typeof body.payload !== 'object' || body.payload === null) {
      send(res, 400, '{"error":"a JSON body with a payload object is required"}', 'application/json');
      return;
    }
    send(res, 200, JSON.stringify({ token: signJwt(body.header ?? {}, body.payload) }), 'application/json');
    return;
  }
  if (url.pathname === '/test/expire-codes') {
    send(res, 200, JSON.stringify({ expired_codes: expireCodes() }), 'application/json');
    return;
  }
  send(res, 404, '{"error":"not_found"}', 'application/json');
}

// ---------------------------------------------------------------------------------------------
// HTTP server: our pages and /test/ endpoints first, everything else to oidc-provider.

const oidcCallback = provider.callback();
const INTERACTION = /^\/interaction\/([\w-]+)(?:\/(login|confirm|abort))?$/;

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, ISSUER);
  try {
    const match = INTERACTION.exec(url.pathname);
    if (match) {
      await handleInteraction(req, res, match[1], match[2]);
    } else if (url.pathname.startsWith('/test/')) {
      await handleTest(req, res, url);
    } else {
      oidcCallback(req, res);
    }
  } catch (err) {
    // e.g. SessionNotFound when the interaction cookie is missing or the interaction expired
    console.error(`[oidc] ${req.method} ${url.pathname}: ${err.message}`);
    if (!res.headersSent) {
      send(res, err.statusCode ?? 500, page('Error', `<p id="error">${esc(err.error ?? 'server_error')}: ${esc(err.error_description ?? err.message)}</p>`));
    } else {
      res.end();
    }
  }
});

server.listen(PORT, HOST, () => {
  process.stdout.write(`READY ${ISSUER}\n`);
});
server.on('error', (err) => {
  console.error(`[oidc] cannot listen on ${HOST}:${PORT}: ${err.message}`);
  process.exit(1);
});

if (args['watch-stdin']) {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
}
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
