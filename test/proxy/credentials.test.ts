/** Placeholder substitution rules, independent of the proxy. */
import { describe, expect, it } from 'vitest';
import { substituteHeader, substituteUrlPart } from '../../src/proxy/credentials.js';

const scope = {
  bound: ['TOKEN', 'EMPTY'],
  secrets: new Map([
    ['TOKEN', 'tök/en+1'],
    ['OTHER', 'x'],
  ]),
};

describe('credential substitution', () => {
  it('replaces in headers, including Bearer and base64 Basic', () => {
    expect(substituteHeader('Bearer carapace:cred:TOKEN', scope)).toEqual({
      ok: true,
      value: 'Bearer ' + Buffer.from('tök/en+1').toString('latin1'),
      used: ['TOKEN'],
    });
    const basic = 'Basic ' + Buffer.from('u:carapace:cred:TOKEN').toString('base64');
    const r = substituteHeader(basic, scope);
    expect(r.ok && Buffer.from(r.value.slice(6), 'base64').toString()).toBe('u:tök/en+1');
    expect(substituteHeader('no placeholder', scope)).toEqual({
      ok: true,
      value: 'no placeholder',
      used: [],
    });
  });
  it('percent-encodes in paths and queries, raw or with an encoded colon', () => {
    expect(substituteUrlPart('a=carapace%3Acred%3ATOKEN&b=carapace:cred:TOKEN', scope)).toMatchObject({
      ok: true,
      value: `a=${encodeURIComponent('tök/en+1')}&b=${encodeURIComponent('tök/en+1')}`,
    });
  });
  it('refuses unbound, unresolved and header-splitting values', () => {
    expect(substituteHeader('x carapace:cred:OTHER', scope)).toEqual({
      ok: false,
      name: 'OTHER',
      problem: 'unbound',
    });
    expect(substituteUrlPart('carapace:cred:EMPTY', scope)).toEqual({
      ok: false,
      name: 'EMPTY',
      problem: 'unresolved',
    });
    const bad = { bound: ['NL'], secrets: new Map([['NL', 'a\r\nX-Evil: 1']]) };
    expect(substituteHeader('carapace:cred:NL', bad)).toEqual({ ok: false, name: 'NL', problem: 'unsafe' });
    const basic = 'Basic ' + Buffer.from('u:carapace:cred:OTHER').toString('base64');
    expect(substituteHeader(basic, scope)).toMatchObject({ ok: false, problem: 'unbound' });
  });
});
