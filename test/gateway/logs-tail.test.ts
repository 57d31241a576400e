/**
 * `sandbox logs --tail N` is the last N lines of the agent's output, whatever the reads were: the
 * log keeps one record per read of a pipe (native/logs.c), and a program writing byte by byte
 * (curl's stderr) makes a record of each byte, so N records were N bytes, cut mid-line. With
 * `-o json` it is the last N records, as the gateway keeps them.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliAs, startTestGateway, until, type TestGateway } from '../helpers/gateway.js';
import { holds } from '../helpers/premises.js';

describe.skipIf(!holds('root'))('sandbox logs --tail', () => {
  let gw: TestGateway;
  const cli = (args: string[]) => cliAs(gw.home, args);
  beforeAll(async () => {
    gw = await startTestGateway();
    // One write of three lines, then a line written a byte at a time, then one of two lines.
    const script =
      'printf "one\\ntwo\\nthree\\n"; for c in f o u r; do printf $c; sleep 0.05; done; printf "\\n"; ' +
      'sleep 0.05; printf "five\\nsix\\n"; exec sleep infinity';
    const r = cli(['sandbox', 'create', '--name', 'bytes', '--', 'sh', '-c', script]);
    expect(r.status, r.stderr).toBe(0);
    await until('the last line logged', () => cli(['sandbox', 'logs', 'bytes']).stdout.endsWith('six\n'));
  });
  afterAll(async () => {
    cli(['sandbox', 'delete', 'bytes']);
    await gw?.stop();
  });

  it('counts lines of output, not the reads the log recorded', () => {
    expect(cli(['sandbox', 'logs', 'bytes']).stdout).toBe('one\ntwo\nthree\nfour\nfive\nsix\n');
    const tail = (n: number) => cli(['sandbox', 'logs', 'bytes', '--tail', String(n)]).stdout;
    expect(tail(0)).toBe('');
    expect(tail(1)).toBe('six\n');
    expect(tail(2)).toBe('five\nsix\n');
    expect(tail(3)).toBe('four\nfive\nsix\n');
    expect(tail(5)).toBe('two\nthree\nfour\nfive\nsix\n');
    expect(tail(6)).toBe('one\ntwo\nthree\nfour\nfive\nsix\n');
    expect(tail(60)).toBe('one\ntwo\nthree\nfour\nfive\nsix\n');
  });

  it('with -o json, the last N records as kept', () => {
    const all = cli(['sandbox', 'logs', 'bytes', '-o', 'json']).stdout.trim().split('\n');
    expect(all.length).toBeGreaterThan(3);
    expect(cli(['sandbox', 'logs', 'bytes', '--tail', '3', '-o', 'json']).stdout.trim().split('\n')).toEqual(
      all.slice(-3),
    );
  });
});
