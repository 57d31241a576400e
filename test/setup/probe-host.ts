/**
 * vitest globalSetup: probes the host once per run and provides the answer to every test file
 * (test/helpers/premises.ts reads it). Prints the premises that do not hold, so a run's output says
 * up front what it could not test here.
 */
import type { TestProject } from 'vitest/node';
import { probeHost, type HostPremises } from '../helpers/host-probe.js';

declare module 'vitest' {
  export interface ProvidedContext {
    hostPremises: HostPremises;
  }
}

export default function setup(project: TestProject): void {
  const premises = probeHost();
  project.provide('hostPremises', premises);
  const missing = Object.entries(premises).filter(([, p]) => !p.holds);
  if (missing.length > 0) {
    process.stdout.write(
      `host premises that do not hold here (tests needing them are skipped):\n` +
        missing.map(([name, p]) => `  ${name}: ${p.detail}\n`).join(''),
    );
  }
}
