/**
 * A reference interpreter for the subset of classic BPF that seccomp programs use, written from the
 * kernel's semantics rather than from the assembler, so that tests can check what a program answers
 * for an architecture this host cannot execute (aarch64) and for inputs no real process can produce.
 */
import { BPF } from '../../../src/sandbox/seccomp/bpf.js';
import type { SockFilter } from '../../../src/sandbox/seccomp/assembler.js';

export interface SeccompData {
  nr: number;
  arch: number;
  /** Up to six 64-bit arguments. */
  args?: readonly bigint[];
}

function word(data: SeccompData, offset: number): number {
  if (offset === 0) return data.nr >>> 0;
  if (offset === 4) return data.arch >>> 0;
  if (offset >= 16 && offset < 64 && offset % 4 === 0) {
    const arg = BigInt.asUintN(64, data.args?.[Math.floor((offset - 16) / 8)] ?? 0n);
    return Number((offset - 16) % 8 === 0 ? arg & 0xffffffffn : arg >> 32n);
  }
  throw new Error(`load from offset ${offset} is outside seccomp_data`);
}

/** Runs the program and returns the seccomp action value it ends with. */
export function runFilter(program: readonly SockFilter[], data: SeccompData): number {
  let a = 0;
  for (let pc = 0; pc < program.length; pc++) {
    const f = program[pc]!;
    switch (f.code) {
      case BPF.LD | BPF.W | BPF.ABS:
        a = word(data, f.k);
        break;
      case BPF.ALU | BPF.AND | BPF.K:
        a = (a & f.k) >>> 0;
        break;
      case BPF.JMP | BPF.JA:
        pc += f.k;
        break;
      case BPF.JMP | BPF.JEQ | BPF.K:
        pc += a === f.k ? f.jt : f.jf;
        break;
      case BPF.JMP | BPF.JGT | BPF.K:
        pc += a > f.k ? f.jt : f.jf;
        break;
      case BPF.JMP | BPF.JGE | BPF.K:
        pc += a >= f.k ? f.jt : f.jf;
        break;
      case BPF.JMP | BPF.JSET | BPF.K:
        pc += (a & f.k) !== 0 ? f.jt : f.jf;
        break;
      case BPF.RET | BPF.K:
        return f.k;
      default:
        throw new Error(`unsupported instruction code 0x${f.code.toString(16)} at ${pc}`);
    }
    if (pc + 1 > program.length) throw new Error(`jump past the end at ${pc}`);
  }
  throw new Error('fell off the end of the program');
}
