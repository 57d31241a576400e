/**
 * An agent for gateway sandboxes that makes requests when the test asks: for each /sandbox/go-N it
 * fetches the URL written there (through the proxy its HTTP_PROXY names), reads the whole body, and
 * writes the status, or the error, to /sandbox/out-N. It notes each of its starts in /sandbox/starts, so a test can tell
 * that one agent, never restarted, served every request.
 */
import { chmodSync, existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const REQUEST_AGENT = [
  'import os, time, urllib.request as u',
  'open("/sandbox/starts", "a").write("start\\n")',
  'n = 0',
  'while True:',
  '    n += 1',
  '    go = f"/sandbox/go-{n}"',
  '    while not os.path.exists(go): time.sleep(0.02)',
  '    try:',
  '        r = u.urlopen(open(go).read().strip(), timeout=30)',
  '        r.read()',
  '        s = r.status',
  '    except Exception as e:',
  '        s = getattr(e, "code", None) or repr(e)',
  '    open(f"/sandbox/out-{n}.tmp", "w").write(str(s))',
  '    os.rename(f"/sandbox/out-{n}.tmp", f"/sandbox/out-{n}")',
].join('\n');

/** Asks the agent whose workspace is `workspace` to fetch `url`; resolves with what it got. */
export function requester(workspace: string): (url: string) => Promise<string> {
  let n = 0;
  return async (url) => {
    n++;
    const go = join(workspace, `go-${n}`);
    writeFileSync(`${go}.tmp`, `${url}\n`);
    chmodSync(`${go}.tmp`, 0o644);
    renameSync(`${go}.tmp`, go);
    const out = join(workspace, `out-${n}`);
    while (!existsSync(out)) await new Promise((r) => setTimeout(r, 25));
    return readFileSync(out, 'utf8');
  };
}
