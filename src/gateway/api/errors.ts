/**
 * The API's errors: every failure a client can see has a stable `code` (clients branch on it, never
 * on the message) and exactly one HTTP status. Library errors that carry a `code` are mapped here;
 * anything else is an internal error whose details stay in the gateway's log.
 */

export const API_ERROR_STATUS = {
  INVALID_INPUT: 400,
  POLICY_INVALID: 400,
  UNKNOWN_PRESET: 400,
  INVALID_SANDBOX_NAME: 400,
  FORWARD_NOT_LISTENABLE: 400,
  UNAUTHENTICATED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  SANDBOX_NOT_FOUND: 404,
  PROVIDER_NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  SANDBOX_EXISTS: 409,
  PROVIDER_EXISTS: 409,
  SANDBOX_BUSY: 409,
  SANDBOX_NOT_RUNNING: 409,
  VERSION_CONFLICT: 409,
  POLICY_NEEDS_RESTART: 409,
  FORWARD_PORT_TAKEN: 409,
  FORWARD_PORT_UNAVAILABLE: 409,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  CGROUP_UNAVAILABLE: 422,
  SANDBOX_START_FAILED: 422,
  QUOTA_EXCEEDED: 429,
  UID_RANGE_EXHAUSTED: 503,
  UID_REGISTRY_BUSY: 503,
  UID_REGISTRY_INVALID: 500,
  INTERNAL: 500,
} as const;

export type ApiErrorCode = keyof typeof API_ERROR_STATUS;

export class ApiError extends Error {
  override name = 'ApiError';
  readonly status: number;
  constructor(
    readonly code: ApiErrorCode,
    message: string,
    /** Extra machine-readable detail (e.g. policy diagnostics). */
    readonly details?: unknown,
  ) {
    super(message);
    this.status = API_ERROR_STATUS[code];
  }
}

/** The body of every error response. */
export interface ApiErrorBody {
  error: { code: string; message: string; details?: unknown };
}

/** Any thrown value as an ApiError: typed library errors keep their code and message. */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && code in API_ERROR_STATUS) {
    return new ApiError(code as ApiErrorCode, (err as Error).message, (err as { details?: unknown }).details);
  }
  return new ApiError('INTERNAL', 'internal error (the gateway log has the details)');
}
