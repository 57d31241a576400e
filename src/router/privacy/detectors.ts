/**
 * Built-in detectors of personal data and secrets in prompt text. They find *shapes*, not meaning:
 * an email address, a number that passes the Luhn check with a card issuer's prefix, an IBAN whose
 * check digits are right, a key with a known vendor prefix. What they cannot see (a name, an
 * address, a diagnosis, a secret without a known shape) passes; what merely looks like one (a
 * 16-digit order number that happens to pass Luhn) is caught. docs/router.md says so.
 *
 * Cost: every detector is a hand-written scan that looks at each character a bounded number of
 * times (no backtracking regular expression over the agent's text: a crafted prompt must not stall
 * the event loop that serves every sandbox). Prefilters (`indexOf('@')`, a digit) skip most text.
 *
 * One file per family under detectors/; this one picks them by name and runs them.
 */
import type { BuiltinDetector } from '../../policy/index.js';
import type { Detector, Span } from './detectors/chars.js';
import { email } from './detectors/email.js';
import { iban, ibanValid } from './detectors/iban.js';
import {
  ipv4,
  ipv6,
  luhn,
  numberRuns,
  paymentCard,
  phone,
  usSsn,
  type NumberRun,
} from './detectors/numbers.js';
import { apiKey, jwt, privateKey } from './detectors/secrets.js';
import { ukNino } from './detectors/uk-nino.js';

export type { Span };

/** Detectors that read the text themselves; the numeric ones read number runs (computed once). */
const TEXT_DETECTORS: Partial<Record<BuiltinDetector, Detector>> = {
  email,
  iban,
  uk_nino: ukNino,
  api_key: apiKey,
  private_key: privateKey,
  jwt,
};
const RUN_DETECTORS: Partial<Record<BuiltinDetector, (text: string, r: NumberRun) => boolean>> = {
  phone: (_t, r) => phone(r),
  payment_card: (_t, r) => paymentCard(r),
  us_ssn: (_t, r) => usSsn(r),
  ip_address: ipv4,
};

/** The placeholder label of each detector (`[EMAIL_…]`). */
export const DETECTOR_LABELS: Record<BuiltinDetector, string> = {
  email: 'EMAIL',
  phone: 'PHONE',
  payment_card: 'CARD',
  iban: 'IBAN',
  us_ssn: 'SSN',
  uk_nino: 'NINO',
  ip_address: 'IP',
  api_key: 'API_KEY',
  private_key: 'PRIVATE_KEY',
  jwt: 'JWT',
};

/** What each of `detectors` finds in `text` (only the detectors that found something). */
export function detectMany(text: string, detectors: Iterable<BuiltinDetector>): Map<BuiltinDetector, Span[]> {
  const found = new Map<BuiltinDetector, Span[]>();
  let runs: NumberRun[] | null = null;
  for (const d of detectors) {
    const out: Span[] = [];
    const direct = TEXT_DETECTORS[d];
    if (direct !== undefined) direct(text, out);
    const check = RUN_DETECTORS[d];
    if (check !== undefined) {
      runs ??= numberRuns(text);
      for (const r of runs) if (check(text, r)) out.push({ start: r.start, end: r.end });
    }
    if (d === 'ip_address') ipv6(text, out);
    if (out.length > 0)
      found.set(
        d,
        out.sort((a, b) => a.start - b.start),
      );
  }
  return found;
}

/** Every span `detector` finds in `text`, in order of start. */
export function detect(detector: BuiltinDetector, text: string): Span[] {
  return detectMany(text, [detector]).get(detector) ?? [];
}

export { luhn, ibanValid };
