/**
 * Lines of an agent's output, over the records its log keeps. The init writes one record per short
 * window of a pipe's output (native/logs.c): a line can span records (a program that writes byte
 * by byte, as curl's stderr does, slower than the window), and one record can hold many lines. `sandbox logs --tail N` means lines, so the records
 * are weighed by the line ends they hold, and the oldest one shown is cut to the lines asked for.
 *
 * The two streams are one sequence of lines, in the order the records are in (as the CLI prints
 * them). An init record (its own warnings) is a line of its own even without a `\n` (the CLI
 * prints it so).
 */
import type { LogLine } from './log-service.js';

/** The bytes a record holds: `d` (text) or `b` (base64, not valid UTF-8). */
function bytesOf(line: LogLine): Buffer {
  return typeof line.d === 'string' ? Buffer.from(line.d, 'utf8') : Buffer.from(line.b ?? '', 'base64');
}

function newlines(bytes: Buffer): number {
  let n = 0;
  for (let i = bytes.indexOf(10); i !== -1; i = bytes.indexOf(10, i + 1)) n++;
  return n;
}

/**
 * Weighs records newest first for the last `tail` lines: each returns how many line starts it
 * holds that end a line after it (its `\n`s; the newest record's final `\n` ends the last line and
 * starts none). Once the weights reach `tail`, the oldest record weighed holds the start of the
 * first line to show; cutLines() cuts it there.
 */
export class LineWeigher {
  private newest = true;

  weigh(line: LogLine): number {
    const bytes = bytesOf(line);
    let n = newlines(bytes);
    if (line.s === 'init' && bytes.at(-1) !== 10) n++;
    if (this.newest) {
      this.newest = false;
      if (line.s === 'init' || bytes.at(-1) === 10) n--;
    }
    return Math.max(n, 0);
  }
}

/**
 * The oldest record of a tail, cut so that `surplus` + 1 of its line ends and what is before them
 * go: it starts with the first line to show. Null when nothing of it is left.
 */
export function cutLines(line: LogLine, surplus: number): LogLine | null {
  const bytes = bytesOf(line);
  let at = -1;
  for (let i = 0; i <= surplus; i++) {
    at = bytes.indexOf(10, at + 1);
    if (at === -1) return null; // an init line without its `\n`: the line before the first shown
  }
  const rest = bytes.subarray(at + 1);
  if (rest.length === 0) return null;
  const { d: _d, b: _b, ...kept } = line;
  return typeof line.d === 'string'
    ? { ...kept, d: rest.toString('utf8') }
    : { ...kept, b: rest.toString('base64') };
}
