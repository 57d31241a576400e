/**
 * The one typed error of blueprints. Callers branch on `code`; the CLI prints the message (one
 * line: what is wrong, where, what to do) and exits with `exitCode`.
 */
export type BlueprintErrorCode =
  /** blueprint.yaml is not a valid blueprint (diagnostics in the message, one per line). */
  | 'BLUEPRINT_INVALID'
  /** The directory holds something a blueprint may not (a symlink, a device, an unreadable file). */
  | 'BLUEPRINT_LAYOUT'
  /** No digest recorded, or an empty one: nothing to verify against, so nothing is trusted. */
  | 'DIGEST_MISSING'
  /** The files are not the ones the digest was recorded for. */
  | 'DIGEST_MISMATCH'
  /** A signature is malformed, does not verify, or no trusted key signed it when one must. */
  | 'SIGNATURE_INVALID'
  | 'SIGNATURE_UNTRUSTED'
  | 'KEY_INVALID'
  | 'BLUEPRINT_NOT_FOUND'
  | 'BLUEPRINT_EXISTS'
  /** A blueprint that needs a newer Carapace than this one. */
  | 'CARAPACE_TOO_OLD'
  /** Installing the agent image failed (npm, the sandbox, an integrity check). */
  | 'IMAGE_INSTALL_FAILED'
  | 'IMAGE_INVALID';

export class BlueprintError extends Error {
  override name = 'BlueprintError';
  constructor(
    readonly code: BlueprintErrorCode,
    message: string,
    // As every CLI error: 2 bad input, 3 not there, 1 a failure (docs/architecture.md).
    readonly exitCode = code === 'BLUEPRINT_INVALID' ? 2 : code === 'BLUEPRINT_NOT_FOUND' ? 3 : 1,
  ) {
    super(message);
  }
}
