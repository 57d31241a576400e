/**
 * Removing what a sandbox could write into (its workspace, its storage), for one-off runs and
 * `sandbox delete` alike.
 */
import { spawn } from 'node:child_process';
import { readdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { rm } from 'node:fs/promises';

/**
 * Removes a tree the sandbox could write into. Neither rmSync nor fs/promises' rm: a command may
 * leave any number of files there, and a gateway's event loop would wait on them (every user's
 * requests, every sandbox's connections): 200,000 files held it 2.5 s with rmSync, and 100,000
 * in one directory held a timer up 0.6 s with rm, which answers each entry in this process. An
 * empty directory (a run that wrote nothing) goes at once; anything else goes by rm(1) in a
 * process of its own (which does not follow symlinks), and by rm here only where that failed.
 */
export async function removeTree(path: string): Promise<void> {
  try {
    rmdirSync(path);
    return;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
  }
  const removed = await new Promise<boolean>((resolve) => {
    const child = spawn('rm', ['-rf', '--', path], { stdio: 'ignore' });
    child.once('error', () => resolve(false));
    child.once('close', (code) => resolve(code === 0));
  });
  // What rm(1) could not do (or no rm(1)), with the error that says why.
  if (!removed) await rm(path, { recursive: true, force: true });
}

/**
 * Removes every entry of the directory `dir` but `keep`, each as removeTree does. `dir` must be
 * one no sandbox can write (its entries are named, then removed without following a link).
 */
export async function removeAllBut(dir: string, keep: string): Promise<void> {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return; // gone: nothing to keep or remove
  }
  for (const name of names) if (name !== keep) await removeTree(join(dir, name));
}
