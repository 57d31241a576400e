/**
 * A kept-alive upstream after a reload: its address was checked under the generation that opened
 * it, so a request on it under a newer generation checks it again (a reload may narrow
 * `allowed_ips`), and a WebSocket upgrade on it cannot outlive the narrowing as a raw tunnel.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  HttpReader,
  type Rig,
  type Upstreams,
  compile,
  relayConnect,
  startRig,
  startUpstreams,
} from './harness.js';

let up: Upstreams;
let rig: Rig;
const policy = (u: Upstreams, allowedIps: string) => `
version: 1
network_policies:
  ws:
    endpoints:
      - host: raw.example.test
        port: ${u.httpPort}
        protocol: websocket
        ${allowedIps}
        rules:
          - allow: { method: GET, path: "/**" }
`;
beforeAll(async () => {
  up = await startUpstreams();
  rig = await startRig({ up, policy: policy(up, '') });
});
afterAll(async () => {
  await rig.close();
  await up.close();
});

it('a request on an upstream kept alive across a reload that narrows allowed_ips is refused', async () => {
  const base = `http://raw.example.test:${up.httpPort}`;
  const head = `Host: raw.example.test:${up.httpPort}\r\n`;
  const upgrade = `${head}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n`;
  for (const second of [
    `GET ${base}/x HTTP/1.1\r\n${head}\r\n`,
    `GET ${base}/ws HTTP/1.1\r\n${upgrade}\r\n`,
  ]) {
    rig.sb.setGeneration(compile(policy(up, '')));
    const sock = await relayConnect(rig.socketPath);
    const r = new HttpReader(sock);
    sock.write(`GET ${base}/x HTTP/1.1\r\n${head}\r\n`);
    expect((await r.response()).status).toBe(200);
    // Loopback is outside 10.0.0.0/8: the guard refuses the upstream's address from now on.
    rig.sb.setGeneration(compile(policy(up, 'allowed_ips: ["10.0.0.0/8"]')));
    sock.write(second);
    const res = await r.response();
    expect(res.status, second).toBe(403);
    expect(res.json<{ reason: string }>().reason).toMatch(/outside the endpoint's allowed_ips/);
    expect(rig.sb.openTunnels).toBe(0);
    sock.destroy();
  }
});
