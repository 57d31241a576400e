/**
 * What a sandbox needs to use the proxy: the environment that points every common HTTP stack at the
 * relay, and the trust files for the sandbox CA.
 *
 * Tools differ in how they take a CA: NODE_EXTRA_CA_CERTS ADDS to Node's built-in roots, so it gets the
 * sandbox CA alone; SSL_CERT_FILE (OpenSSL), REQUESTS_CA_BUNDLE (Python requests), CURL_CA_BUNDLE,
 * GIT_SSL_CAINFO, PIP_CERT and DENO_CERT REPLACE the system roots, so they get the combined bundle
 * (system roots + sandbox CA). Paths are in-sandbox paths; the launcher binds the host files written
 * by writeTrustFiles at those paths. Nothing secret is in either file: the CA key stays on the host.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const DEFAULT_SYSTEM_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';

/**
 * Where the sandbox's trust files are bound inside. Not under /etc: a read-only /etc bound from
 * the host has no /etc/carapace to mount onto, and bwrap cannot create one in it.
 */
export const SANDBOX_CA_PATH = '/.carapace/ca.pem';
export const SANDBOX_BUNDLE_PATH = '/.carapace/ca-bundle.pem';

export interface SandboxEnvOptions {
  /** The relay inside the sandbox (default http://127.0.0.1:3128). */
  proxyUrl?: string;
  /** In-sandbox path of the sandbox CA alone (default SANDBOX_CA_PATH). */
  caPath?: string;
  /** In-sandbox path of the combined bundle (default SANDBOX_BUNDLE_PATH). */
  bundlePath?: string;
  /** Hosts that bypass the proxy (default: the sandbox's own loopback). */
  noProxy?: string;
}

/** The environment variables to give the agent. */
export function sandboxProxyEnv(options: SandboxEnvOptions = {}): Record<string, string> {
  const proxy = options.proxyUrl ?? 'http://127.0.0.1:3128';
  const ca = options.caPath ?? SANDBOX_CA_PATH;
  const bundle = options.bundlePath ?? SANDBOX_BUNDLE_PATH;
  const noProxy = options.noProxy ?? 'localhost,127.0.0.1,::1';
  const env: Record<string, string> = {};
  for (const name of ['HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'GRPC_PROXY']) {
    env[name] = proxy;
    env[name.toLowerCase()] = proxy;
  }
  env.NO_PROXY = noProxy;
  env.no_proxy = noProxy;
  env.NODE_USE_ENV_PROXY = '1';
  env.NODE_EXTRA_CA_CERTS = ca;
  // npm reads no NODE_EXTRA_CA_CERTS once a config file names a `cafile` (some distributions'
  // /etc/npmrc does): its environment setting outranks the files.
  env.npm_config_cafile = bundle;
  for (const name of [
    'SSL_CERT_FILE',
    'REQUESTS_CA_BUNDLE',
    'CURL_CA_BUNDLE',
    'GIT_SSL_CAINFO',
    'PIP_CERT',
    'DENO_CERT',
  ]) {
    env[name] = bundle;
  }
  return env;
}

/** System roots followed by the sandbox CA. A missing system bundle yields the CA alone. */
export function buildCaBundle(caPem: string, systemBundlePath = DEFAULT_SYSTEM_BUNDLE): string {
  let system = '';
  try {
    system = readFileSync(systemBundlePath, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (system && !system.endsWith('\n')) system += '\n';
  return `${system}# Carapace sandbox CA\n${caPem}`;
}

export interface TrustFiles {
  caFile: string;
  bundleFile: string;
}

/** Write `ca.pem` and `ca-bundle.pem` (mode 0644, public material) under `dir` on the host. */
export function writeTrustFiles(
  dir: string,
  caPem: string,
  systemBundlePath = DEFAULT_SYSTEM_BUNDLE,
): TrustFiles {
  mkdirSync(dir, { recursive: true });
  const caFile = join(dir, 'ca.pem');
  const bundleFile = join(dir, 'ca-bundle.pem');
  writeFileSync(caFile, caPem, { mode: 0o644 });
  writeFileSync(bundleFile, buildCaBundle(caPem, systemBundlePath), { mode: 0o644 });
  return { caFile, bundleFile };
}
