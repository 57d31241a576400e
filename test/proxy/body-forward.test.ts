/**
 * A message whose head and body are already read leaves in one write: without a copy when the two
 * lie next to each other in the chunk they were read in, with one otherwise; a pipelined next
 * message stays for the next read.
 */
import { PassThrough, Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { forwardBodyNow, joined } from '../../src/proxy/http/body-forward.js';
import { findHeadEnd } from '../../src/proxy/http/http-fields.js';
import { StreamReader } from '../../src/proxy/http/stream-reader.js';

function collector(): { dest: Writable; writes: Buffer[] } {
  const writes: Buffer[] = [];
  const dest = new Writable({
    write(chunk: Buffer, _enc, cb) {
      writes.push(Buffer.from(chunk));
      cb();
    },
  });
  return { dest, writes };
}

describe('joined', () => {
  it('is a view over both when the body follows the head in the same buffer', () => {
    const chunk = Buffer.from('HEAD|body|next');
    const j = joined(chunk.subarray(0, 5), chunk.subarray(5, 9));
    expect(j.toString()).toBe('HEAD|body');
    expect(j.buffer).toBe(chunk.buffer);
    expect(j.byteOffset).toBe(chunk.byteOffset);
  });

  it('copies when they are apart (another buffer, or a gap between them)', () => {
    const chunk = Buffer.from('HEAD|xbody');
    const gap = joined(chunk.subarray(0, 5), chunk.subarray(6));
    expect(gap.toString()).toBe('HEAD|body');
    chunk[0] = 0x58; // a copy: the source changing afterwards leaves it as it was
    expect(gap.toString()).toBe('HEAD|body');
    const other = joined(Buffer.from('HEAD|'), Buffer.from('body'));
    expect(other.toString()).toBe('HEAD|body');
  });
});

describe('forwardBodyNow', () => {
  it('writes a head and its Content-Length body read in one chunk as one write, keeping what follows', async () => {
    const source = new PassThrough();
    const reader = new StreamReader(source);
    const response = 'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"ok":true}';
    const next = 'HTTP/1.1 204 No Content\r\n\r\n';
    source.write(Buffer.from(response + next, 'latin1'));
    const head = await reader.readHead(64 * 1024);
    expect(head).not.toBeNull();
    expect(findHeadEnd(head as Buffer, 64 * 1024)).toBe((head as Buffer).length);
    const { dest, writes } = collector();
    const wait = forwardBodyNow(reader, dest, { kind: 'length', length: 11 }, head);
    expect(wait).toBeUndefined();
    expect(writes.map((w) => w.toString('latin1'))).toEqual([response]);
    expect((await reader.read())?.toString('latin1')).toBe(next);
  });
});
