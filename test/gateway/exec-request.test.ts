/**
 * The request line of an exec through the gateway: read whole, checked, and not waited for
 * without end (a client that upgrades and sends nothing would hold a descriptor for good).
 */
import { Duplex } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { readRequestLine } from '../../src/gateway/sandbox-io/exec-bridge.js';

const client = () => new Duplex({ read() {}, write: (_c, _e, done) => done() });

describe('the exec request line', () => {
  it('is read with what follows it left for the exec', async () => {
    const socket = client();
    const read = readRequestLine(socket, Buffer.from('{"argv":["true"]}\nrest'));
    await expect(read).resolves.toMatchObject({ request: { argv: ['true'], tty: false } });
    expect(String((await read).rest)).toBe('rest');
  });

  it('is refused when it does not come', async () => {
    await expect(readRequestLine(client(), Buffer.alloc(0), 50)).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      message: 'no exec request within 0.05 s of the upgrade',
    });
  });

  it('is refused when it is not JSON or not an exec request', async () => {
    await expect(readRequestLine(client(), Buffer.from('hello\n'))).rejects.toMatchObject({
      message: 'the exec request is not JSON',
    });
    await expect(readRequestLine(client(), Buffer.from('{"argv":[]}\n'))).rejects.toMatchObject({
      code: 'INVALID_INPUT',
    });
  });
});
