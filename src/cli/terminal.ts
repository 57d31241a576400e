/**
 * Output for people: tables without borders (like kubectl's), and a spinner on stderr for what may
 * take a while — only on a terminal, so scripts and pipes get plain lines.
 */
import Table from 'cli-table3';
import { printable } from '../policy/printable.js';

const NO_BORDERS = {
  top: '',
  'top-mid': '',
  'top-left': '',
  'top-right': '',
  bottom: '',
  'bottom-mid': '',
  'bottom-left': '',
  'bottom-right': '',
  left: '',
  'left-mid': '',
  mid: '',
  'mid-mid': '',
  right: '',
  'right-mid': '',
  middle: '   ',
};

/**
 * Columns padded to their widest cell, a header row first; every cell made printable (control,
 * bidi and invisible characters escaped: src/policy/printable.ts, the rule of every view).
 */
export function table(head: string[], rows: string[][]): string {
  const t = new Table({
    head,
    chars: NO_BORDERS,
    style: { head: [], border: [], 'padding-left': 0, 'padding-right': 0 },
  });
  for (const r of rows) t.push(r.map(printable));
  return (
    t
      .toString()
      .split('\n')
      .map((l) => l.trimEnd())
      .join('\n') + '\n'
  );
}

/** Runs `work` with a spinner on stderr when stderr is a terminal, for longer than a second. */
export async function withSpinner<T>(text: string, work: () => Promise<T>): Promise<T> {
  if (!process.stderr.isTTY) return work();
  const { default: yoctoSpinner } = await import('yocto-spinner');
  const spinner = yoctoSpinner({ text, stream: process.stderr });
  const timer = setTimeout(() => spinner.start(), 1000);
  try {
    return await work();
  } finally {
    clearTimeout(timer);
    if (spinner.isSpinning) spinner.stop();
  }
}
