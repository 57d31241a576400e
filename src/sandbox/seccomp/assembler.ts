/**
 * A small assembler for classic BPF as seccomp runs it: loads from `seccomp_data`, AND with a
 * constant, conditional jumps, unconditional jumps and returns. Jumps name labels; the assembler turns
 * them into the relative offsets of `struct sock_filter`.
 *
 * Why an assembler and not hand-counted offsets: a conditional jump's `jt`/`jf` are 8-bit forward
 * offsets, so a target more than 255 instructions ahead cannot be reached directly. Counting by hand is
 * how filters end up jumping into the wrong rule when a line is added. Here an out-of-range branch gets
 * a trampoline (`ja`, whose offset is 32-bit) right after it, and the layout is recomputed until every
 * offset fits, so a caller never thinks about distances.
 *
 * Only forward jumps exist in classic BPF (the kernel rejects anything else), which is also what
 * guarantees that every filter terminates; the assembler refuses backward or unknown labels.
 */
import { BPF, BPF_MAXINSNS, SOCK_FILTER_SIZE } from './bpf.js';

/** One `struct sock_filter`. */
export interface SockFilter {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

/** A branch target: a label, or `NEXT` for the instruction that follows in the source. */
export type Target = string | typeof NEXT;
export const NEXT = Symbol('next');

export type CondOp = 'jeq' | 'jgt' | 'jge' | 'jset';

type Item =
  | { op: 'label'; name: string }
  | { op: 'ld'; offset: number }
  | { op: 'and'; k: number }
  | { op: CondOp; k: number; jt: Target; jf: Target }
  | { op: 'ja'; target: string }
  | { op: 'ret'; k: number };

type Instr = Exclude<Item, { op: 'label' }>;
type CondInstr = Extract<Instr, { op: CondOp }>;

const COND_CODE: Record<CondOp, number> = {
  jeq: BPF.JMP | BPF.JEQ | BPF.K,
  jgt: BPF.JMP | BPF.JGT | BPF.K,
  jge: BPF.JMP | BPF.JGE | BPF.K,
  jset: BPF.JMP | BPF.JSET | BPF.K,
};

/** The largest offset a conditional jump can encode. Exported so tests can use a smaller one. */
export const MAX_COND_OFFSET = 255;

export class BpfAssemblyError extends Error {
  override name = 'BpfAssemblyError';
}

function isCond(i: Instr): i is CondInstr {
  return i.op === 'jeq' || i.op === 'jgt' || i.op === 'jge' || i.op === 'jset';
}

function u32(k: number): number {
  if (!Number.isInteger(k) || k < 0 || k > 0xffffffff) {
    throw new BpfAssemblyError(`constant ${k} is not an unsigned 32-bit integer`);
  }
  return k;
}

export class BpfAssembler {
  private readonly items: Item[] = [];

  /** Marks the position of the next instruction. */
  label(name: string): this {
    this.items.push({ op: 'label', name });
    return this;
  }

  /** A ← 32-bit word at `offset` in `seccomp_data` (BPF_LD | BPF_W | BPF_ABS). */
  load(offset: number): this {
    if (!Number.isInteger(offset) || offset < 0 || offset % 4 !== 0) {
      throw new BpfAssemblyError(`load offset ${offset} is not an aligned word offset`);
    }
    this.items.push({ op: 'ld', offset });
    return this;
  }

  /** A ← A & k. */
  and(k: number): this {
    this.items.push({ op: 'and', k: u32(k) });
    return this;
  }

  /** Jump to `jt` if A == k, else to `jf`. */
  jeq(k: number, jt: Target, jf: Target = NEXT): this {
    return this.cond('jeq', k, jt, jf);
  }

  /** Jump to `jt` if A > k (unsigned), else to `jf`. */
  jgt(k: number, jt: Target, jf: Target = NEXT): this {
    return this.cond('jgt', k, jt, jf);
  }

  /** Jump to `jt` if A >= k (unsigned), else to `jf`. */
  jge(k: number, jt: Target, jf: Target = NEXT): this {
    return this.cond('jge', k, jt, jf);
  }

  /** Jump to `jt` if (A & k) != 0, else to `jf`. */
  jset(k: number, jt: Target, jf: Target = NEXT): this {
    return this.cond('jset', k, jt, jf);
  }

  /** Unconditional jump (32-bit offset: any distance). */
  jump(target: string): this {
    this.items.push({ op: 'ja', target });
    return this;
  }

  /** End the filter with this seccomp action. */
  ret(k: number): this {
    this.items.push({ op: 'ret', k: u32(k) });
    return this;
  }

  private cond(op: CondOp, k: number, jt: Target, jf: Target): this {
    this.items.push({ op, k: u32(k), jt, jf });
    return this;
  }

  /**
   * Resolves labels to offsets and returns the program. `maxCondOffset` exists for tests, which
   * exercise the trampolines on small programs; real callers leave it at 255.
   */
  assemble(maxCondOffset = MAX_COND_OFFSET): SockFilter[] {
    // A conditional whose both branches are far needs jt = 0 and jf = 1 (two trampolines).
    if (!Number.isInteger(maxCondOffset) || maxCondOffset < 1 || maxCondOffset > MAX_COND_OFFSET) {
      throw new BpfAssemblyError(`maxCondOffset must be 1..${MAX_COND_OFFSET}`);
    }
    const { instrs, labelAt } = this.split();
    const last = instrs[instrs.length - 1];
    if (!last || last.op !== 'ret') {
      throw new BpfAssemblyError('a filter must end with a return');
    }
    // Targets as indices of source instructions; NEXT is the one that follows.
    const resolve = (t: Target, from: number): number => {
      if (t === NEXT) return from + 1;
      const at = labelAt.get(t);
      if (at === undefined) throw new BpfAssemblyError(`jump to undefined label "${t}"`);
      if (at >= instrs.length) throw new BpfAssemblyError(`label "${t}" marks no instruction`);
      if (at <= from)
        throw new BpfAssemblyError(`jump to "${t}" goes backward; BPF allows only forward jumps`);
      return at;
    };
    const targets = instrs.map((ins, i) =>
      isCond(ins)
        ? { jt: resolve(ins.jt, i), jf: resolve(ins.jf, i) }
        : ins.op === 'ja'
          ? { jt: resolve(ins.target, i), jf: 0 }
          : null,
    );

    // Which branches of each conditional need a trampoline. Only ever switched on, so the loop ends.
    const longJt = new Array<boolean>(instrs.length).fill(false);
    const longJf = new Array<boolean>(instrs.length).fill(false);
    let pos: number[] = [];
    for (;;) {
      pos = [];
      let p = 0;
      for (let i = 0; i < instrs.length; i++) {
        pos.push(p);
        p += 1 + (longJt[i] ? 1 : 0) + (longJf[i] ? 1 : 0);
      }
      pos.push(p);
      let changed = false;
      instrs.forEach((ins, i) => {
        const t = targets[i];
        if (!isCond(ins) || !t) return;
        // Offsets count from the instruction right after the conditional.
        const base = pos[i]! + 1;
        if (!longJt[i] && pos[t.jt]! - base > maxCondOffset) longJt[i] = changed = true;
        if (!longJf[i] && pos[t.jf]! - base > maxCondOffset) longJf[i] = changed = true;
      });
      if (!changed) break;
    }

    const out: SockFilter[] = [];
    instrs.forEach((ins, i) => {
      const t = targets[i];
      const here = pos[i]!;
      switch (ins.op) {
        case 'ld':
          out.push({ code: BPF.LD | BPF.W | BPF.ABS, jt: 0, jf: 0, k: ins.offset });
          break;
        case 'and':
          out.push({ code: BPF.ALU | BPF.AND | BPF.K, jt: 0, jf: 0, k: ins.k });
          break;
        case 'ret':
          out.push({ code: BPF.RET | BPF.K, jt: 0, jf: 0, k: ins.k });
          break;
        case 'ja':
          out.push({ code: BPF.JMP | BPF.JA, jt: 0, jf: 0, k: pos[t!.jt]! - here - 1 });
          break;
        default: {
          // Layout: the conditional, then [ja → jt target] if long, then [ja → jf target] if long.
          const trampolines: number[] = [];
          if (longJt[i]) trampolines.push(t!.jt);
          if (longJf[i]) trampolines.push(t!.jf);
          const after = here + 1 + trampolines.length;
          const jt = longJt[i] ? 0 : pos[t!.jt]! - here - 1;
          const jf = longJf[i] ? trampolines.length - 1 : pos[t!.jf]! - here - 1;
          out.push({ code: COND_CODE[ins.op], jt, jf, k: ins.k });
          trampolines.forEach((target, n) => {
            const at = here + 1 + n;
            out.push({ code: BPF.JMP | BPF.JA, jt: 0, jf: 0, k: pos[target]! - at - 1 });
          });
          if (out.length !== after) throw new BpfAssemblyError('internal error: layout mismatch');
        }
      }
    });
    for (const [i, f] of out.entries()) {
      if (f.jt > maxCondOffset || f.jf > maxCondOffset || f.jt < 0 || f.jf < 0) {
        throw new BpfAssemblyError(`internal error: offset out of range at ${i}`);
      }
    }
    if (out.length > BPF_MAXINSNS) {
      throw new BpfAssemblyError(
        `program has ${out.length} instructions; the kernel accepts ${BPF_MAXINSNS}`,
      );
    }
    return out;
  }

  private split(): { instrs: Instr[]; labelAt: Map<string, number> } {
    const instrs: Instr[] = [];
    const labelAt = new Map<string, number>();
    for (const item of this.items) {
      if (item.op === 'label') {
        if (labelAt.has(item.name)) throw new BpfAssemblyError(`label "${item.name}" defined twice`);
        labelAt.set(item.name, instrs.length);
      } else {
        instrs.push(item);
      }
    }
    return { instrs, labelAt };
  }
}

/** The program as the kernel reads it: `struct sock_filter[]`, little-endian. */
export function encodeProgram(program: readonly SockFilter[]): Buffer {
  const buf = Buffer.alloc(program.length * SOCK_FILTER_SIZE);
  program.forEach((f, i) => {
    const o = i * SOCK_FILTER_SIZE;
    buf.writeUInt16LE(f.code, o);
    buf.writeUInt8(f.jt, o + 2);
    buf.writeUInt8(f.jf, o + 3);
    buf.writeUInt32LE(f.k >>> 0, o + 4);
  });
  return buf;
}

export function decodeProgram(bytes: Buffer): SockFilter[] {
  if (bytes.length % SOCK_FILTER_SIZE !== 0) {
    throw new BpfAssemblyError(`${bytes.length} bytes is not a whole number of instructions`);
  }
  const out: SockFilter[] = [];
  for (let o = 0; o < bytes.length; o += SOCK_FILTER_SIZE) {
    out.push({
      code: bytes.readUInt16LE(o),
      jt: bytes.readUInt8(o + 2),
      jf: bytes.readUInt8(o + 3),
      k: bytes.readUInt32LE(o + 4),
    });
  }
  return out;
}

const COND_NAME = new Map(Object.entries(COND_CODE).map(([name, code]) => [code, name]));

/** One line per instruction, with absolute jump targets: for reading a program and in test failures. */
export function disassemble(program: readonly SockFilter[]): string[] {
  const hex = (n: number): string => '0x' + n.toString(16);
  return program.map((f, i) => {
    const at = String(i).padStart(4, '0');
    const cond = COND_NAME.get(f.code);
    if (cond) return `${at}: ${cond} #${hex(f.k)} jt ${i + 1 + f.jt} jf ${i + 1 + f.jf}`;
    if (f.code === (BPF.LD | BPF.W | BPF.ABS)) return `${at}: ld [${f.k}]`;
    if (f.code === (BPF.ALU | BPF.AND | BPF.K)) return `${at}: and #${hex(f.k)}`;
    if (f.code === (BPF.JMP | BPF.JA)) return `${at}: ja ${i + 1 + f.k}`;
    if (f.code === (BPF.RET | BPF.K)) return `${at}: ret #${hex(f.k)}`;
    return `${at}: .word code=${hex(f.code)} jt=${f.jt} jf=${f.jf} k=${hex(f.k)}`;
  });
}
