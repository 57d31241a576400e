/** The schema documents itself: every field carries a description. */
import { describe, expect, it } from 'vitest';
import type { z } from 'zod';
import { PolicySchema, PresetSchema } from '../../src/policy/index.js';

type Def = {
  type: string;
  shape?: Record<string, z.ZodType>;
  element?: z.ZodType;
  valueType?: z.ZodType;
  innerType?: z.ZodType;
  options?: z.ZodType[];
};

function undescribed(schema: z.ZodType, path: string, out: string[], seen = new Set<z.ZodType>()): void {
  if (seen.has(schema)) return;
  seen.add(schema);
  const def = schema.def as Def;
  if (def.type === 'object' && def.shape) {
    for (const [key, field] of Object.entries(def.shape)) {
      let described = field.description !== undefined;
      let inner: z.ZodType = field;
      while ((inner.def as Def).innerType) {
        inner = (inner.def as Def).innerType as z.ZodType;
        described ||= inner.description !== undefined;
      }
      if (!described) out.push(`${path}.${key}`);
      undescribed(inner, `${path}.${key}`, out, seen);
    }
  }
  if (def.element) undescribed(def.element, `${path}[]`, out, seen);
  if (def.valueType) undescribed(def.valueType, `${path}{}`, out, seen);
  if (def.innerType) undescribed(def.innerType, path, out, seen);
  for (const o of def.options ?? []) undescribed(o, path, out, seen);
}

describe('schema', () => {
  it.each([
    ['policy', PolicySchema],
    ['preset', PresetSchema],
  ])('every field of a %s has a description', (_name, schema) => {
    const out: string[] = [];
    undescribed(schema, '', out);
    expect(out).toEqual([]);
  });
});
