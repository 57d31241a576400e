import { describe, expect, it } from 'vitest';
import {
  BpfAssembler,
  BpfAssemblyError,
  NEXT,
  decodeProgram,
  disassemble,
  encodeProgram,
  type SockFilter,
} from '../../src/sandbox/seccomp/assembler.js';
import { BPF } from '../../src/sandbox/seccomp/bpf.js';
import { runFilter } from './helpers/bpf-emulator.js';

const JA = BPF.JMP | BPF.JA;

/** A program whose answer depends on nr through jumps of every kind, with `pad` dead loads in the middle. */
function branchy(pad: number): BpfAssembler {
  const asm = new BpfAssembler();
  asm.load(0);
  asm.jeq(1, 'one'); // jt far
  asm.jeq(2, 'two', 'rest'); // both far
  asm.jgt(100, NEXT, 'small'); // jf far
  asm.jset(0x40, 'bit6'); // jt far
  asm.ret(1000);
  for (let i = 0; i < pad; i++) asm.load(0);
  asm.label('rest').jge(50, 'big').ret(1001);
  asm.label('big').ret(1002);
  asm.label('small').ret(1003);
  asm.label('bit6').ret(1004);
  asm.label('one').ret(1005);
  asm.label('two').ret(1006);
  return asm;
}

function answers(program: SockFilter[]): number[] {
  const out: number[] = [];
  for (const nr of [0, 1, 2, 3, 49, 50, 64, 99, 100, 101, 0x40 + 101, 0xffffffff]) {
    out.push(runFilter(program, { nr, arch: 0 }));
  }
  return out;
}

describe('BPF assembler', () => {
  it('resolves labels and NEXT to relative offsets', () => {
    const prog = new BpfAssembler()
      .load(4)
      .jeq(7, NEXT, 'no')
      .load(0)
      .jeq(39, 'no')
      .ret(0x7fff0000)
      .label('no')
      .ret(0)
      .assemble();
    expect(prog).toEqual([
      { code: BPF.LD | BPF.W | BPF.ABS, jt: 0, jf: 0, k: 4 },
      { code: BPF.JMP | BPF.JEQ, jt: 0, jf: 3, k: 7 },
      { code: BPF.LD | BPF.W | BPF.ABS, jt: 0, jf: 0, k: 0 },
      { code: BPF.JMP | BPF.JEQ, jt: 1, jf: 0, k: 39 },
      { code: BPF.RET, jt: 0, jf: 0, k: 0x7fff0000 },
      { code: BPF.RET, jt: 0, jf: 0, k: 0 },
    ]);
  });

  it('reaches a target exactly 255 instructions ahead without a trampoline, and 256 with one', () => {
    const build = (pad: number): SockFilter[] => {
      const asm = new BpfAssembler().load(0).jeq(1, 'far');
      for (let i = 0; i < pad; i++) asm.load(0);
      return asm.ret(7).label('far').ret(8).assemble();
    };
    const near = build(254); // jeq at 1; far at 1 + 1 + 254 + 1 = 257: offset 255
    expect(near[1]).toMatchObject({ jt: 255, jf: 0 });
    expect(near.filter((f) => f.code === JA)).toHaveLength(0);

    const far = build(255);
    expect(far[1]).toMatchObject({ jt: 0, jf: 1 }); // jt → the trampoline, jf → past it
    expect(far[2]).toMatchObject({ code: JA, k: 256 });
    expect(runFilter(far, { nr: 1, arch: 0 })).toBe(8);
    expect(runFilter(far, { nr: 2, arch: 0 })).toBe(7);
  });

  it('gives far true, false and both branches trampolines that keep the meaning of the program', () => {
    const reference = branchy(0).assemble();
    expect(reference.some((f) => f.code === JA)).toBe(false);
    const long = branchy(300).assemble();
    const trampolines = long.filter((f) => f.code === JA);
    // jeq 1 (jt), jeq 2 (jt and jf), jgt (jf), jset (jt): five
    expect(trampolines).toHaveLength(5);
    for (const f of long) {
      expect(f.jt).toBeLessThanOrEqual(255);
      expect(f.jf).toBeLessThanOrEqual(255);
    }
    expect(answers(long)).toEqual(answers(reference));
  });

  it('converges when trampolines push other jumps out of range', () => {
    // With a limit of 1, almost every branch needs a trampoline, and each one lengthens the others.
    const reference = answers(branchy(3).assemble());
    for (const limit of [1, 2, 3, 5, 8]) {
      const prog = branchy(3).assemble(limit);
      for (const f of prog) {
        expect(f.jt).toBeLessThanOrEqual(limit);
        expect(f.jf).toBeLessThanOrEqual(limit);
      }
      expect(answers(prog)).toEqual(reference);
    }
  });

  it('refuses programs the kernel would refuse, naming the problem', () => {
    expect(() => new BpfAssembler().load(0).jeq(1, 'nowhere').ret(0).assemble()).toThrow(
      /undefined label "nowhere"/,
    );
    expect(() => new BpfAssembler().label('top').load(0).jeq(1, 'top').ret(0).assemble()).toThrow(/backward/);
    expect(() => new BpfAssembler().load(0).assemble()).toThrow(/end with a return/);
    expect(() => new BpfAssembler().label('a').label('a').ret(0).assemble()).toThrow(/defined twice/);
    expect(() => new BpfAssembler().load(3)).toThrow(/aligned/);
    expect(() => new BpfAssembler().jeq(2 ** 32, NEXT)).toThrow(/32-bit/);
    expect(() => new BpfAssembler().load(0).jeq(0, 'end').ret(0).label('end').assemble()).toThrow(
      /marks no instruction/,
    );
    expect(() => branchy(0).assemble(0)).toThrow(BpfAssemblyError);
    const huge = new BpfAssembler();
    for (let i = 0; i < 4096; i++) huge.load(0);
    expect(() => huge.ret(0).assemble()).toThrow(/4096/);
  });

  it('encodes struct sock_filter little-endian, and decodes and disassembles it back', () => {
    const prog = new BpfAssembler()
      .load(4)
      .jeq(0xc000003e, NEXT, 'kill')
      .ret(0x7fff0000)
      .label('kill')
      .ret(0x80000000)
      .assemble();
    const bytes = encodeProgram(prog);
    expect(bytes.toString('hex')).toBe(
      [
        '2000' + '00' + '00' + '04000000',
        '1500' + '00' + '01' + '3e0000c0',
        '0600' + '00' + '00' + '0000ff7f',
        '0600' + '00' + '00' + '00000080',
      ].join(''),
    );
    expect(decodeProgram(bytes)).toEqual(prog);
    expect(disassemble(prog)).toEqual([
      '0000: ld [4]',
      '0001: jeq #0xc000003e jt 2 jf 3',
      '0002: ret #0x7fff0000',
      '0003: ret #0x80000000',
    ]);
    expect(() => decodeProgram(Buffer.alloc(7))).toThrow(/whole number/);
  });
});
