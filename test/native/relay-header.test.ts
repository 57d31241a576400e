/**
 * The relay formats each connection's PROXY line into a fixed buffer (RELAY_HEADER_MAX bytes) and
 * sends what it formatted. snprintf answers the length the line would have had: a line that did
 * not fit must be refused, not sent with that length, which would send whatever follows the buffer
 * on PID 1's stack to the host. Real lines (IPv6 addresses of 39 characters, 20-digit inodes) fit
 * the release size, so this builds the init with a buffer too small for any line, under ASan.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { FIRST_EXTRA_FD, runSandbox, USUAL_PATHS, workDir } from './harness.js';
import { startHostProxy, type HostProxy } from './host-proxy.js';
import { buildVariant } from './native-build.js';

let proxy: HostProxy | undefined;
afterEach(async () => {
  await proxy?.close();
  proxy = undefined;
});

describe('the PROXY line', () => {
  it('that does not fit its buffer is refused: the client is closed, the host gets nothing, the relay serves on', async () => {
    const init = buildVariant('carapace-init', ['RELAY_HEADER_MAX=24']);
    proxy = await startHostProxy(() => {});
    const script = `
import socket
for _ in range(2):  # the relay must survive the first refusal and refuse the second the same way
    s = socket.create_connection(('127.0.0.1', 3128), timeout=20)
    print(repr(s.recv(100)))
`;
    const r = await runSandbox({
      initBinary: init,
      init: [...USUAL_PATHS, '--ro', '/w', '--relay-dir-fd', String(FIRST_EXTRA_FD)],
      fds: [proxy.dirFd],
      work: workDir({ 'client.py': script }),
      command: ['python3', '/w/client.py'],
    });
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("b''\nb''\n");
    expect(r.stderr).toBe(
      "carapace-init: relay: format the PROXY line (the client's connection is closed): Message too long\n".repeat(
        2,
      ),
    );
    // Refused before the relay connected to the host: the host saw no connection at all.
    expect(proxy.connections()).toBe(0);
  });
});
