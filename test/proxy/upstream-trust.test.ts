/**
 * What upstream TLS trusts: Node's roots, the host's CA store (where an administrator adds a
 * TLS-inspecting firewall's CA, as curl and apt read it) and the operator's --upstream-ca file.
 * A chain none of them holds fails, and the reason names --upstream-ca.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  UpstreamTrust,
  sharedUpstreamTrust,
  startTls,
  upstreamContext,
} from '../../src/proxy/net/upstream.js';
import { startUpstreams, type Upstreams } from './harness.js';

let up: Upstreams;
let dir: string;
beforeAll(async () => {
  up = await startUpstreams();
  dir = mkdtempSync(join(tmpdir(), 'carapace-trust-'));
});
afterAll(() => up.close());

async function handshake(context: ReturnType<typeof upstreamContext>): Promise<string> {
  const socket = net.connect(up.httpsPort, '127.0.0.1');
  await new Promise((r) => socket.once('connect', r));
  try {
    const t = await startTls(socket, { host: 'api.example.test', kind: 'dns' }, context);
    t.destroy();
    return 'ok';
  } catch (err) {
    return (err as Error).message;
  }
}

describe('upstream TLS trust', () => {
  it("trusts a CA in the host's store, refuses one nowhere, and names --upstream-ca", async () => {
    // The upstream's CA is in this "host store" only.
    const hostStore = join(dir, 'host-ca-certificates.crt');
    writeFileSync(hostStore, `# a host store\n${up.ca.caPem}`);
    expect(await handshake(upstreamContext(undefined, hostStore))).toBe('ok');
    const refused = await handshake(upstreamContext(undefined, join(dir, 'missing.crt')));
    expect(refused).toMatch(
      /^TLS to api\.example\.test failed \((SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT_LOCALLY)\); to trust its CA, give it with --upstream-ca FILE$/,
    );
    expect(await handshake(upstreamContext(up.caFile, join(dir, 'missing.crt')))).toBe('ok');
  });

  it('refuses an --upstream-ca file without a certificate at once, before any connection', () => {
    const notPem = join(dir, 'not-a-ca.txt');
    writeFileSync(notPem, 'hello\n');
    const fake = join(dir, 'fake-ca.pem');
    writeFileSync(fake, '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
    expect(() => new UpstreamTrust(fake)).toThrow(`${fake} holds a block that is not a certificate`);
    expect(() => new UpstreamTrust(notPem)).toThrow(
      `no certificate in ${notPem}: --upstream-ca takes CA certificates in PEM`,
    );
  });

  it("is one trust per CA file's path and text in a process (the proxy's and the router's), a bad file never kept", () => {
    const missingStore = join(dir, 'missing.crt');
    const file = join(dir, 'shared-ca.pem');
    writeFileSync(file, up.ca.caPem);
    const a = sharedUpstreamTrust(file, missingStore);
    expect(sharedUpstreamTrust(file, missingStore)).toBe(a);
    expect(sharedUpstreamTrust(file, missingStore).context).toBe(a.context);
    expect(sharedUpstreamTrust(undefined, missingStore)).not.toBe(a);
    writeFileSync(file, `# rotated\n${up.ca.caPem}`); // the same path with other contents
    expect(sharedUpstreamTrust(file, missingStore)).not.toBe(a);
    writeFileSync(file, 'hello\n');
    for (let i = 0; i < 2; i++)
      expect(() => sharedUpstreamTrust(file, missingStore)).toThrow(/no certificate in/);
  });
});
