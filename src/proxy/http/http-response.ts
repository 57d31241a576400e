/**
 * Response heads from upstream servers, parsed to learn where each response ends (so a kept-alive
 * client connection stays in step) — the bytes themselves are forwarded as received.
 *
 * Threat: an upstream (or a machine in the middle of a plain-HTTP upstream) desynchronises the
 * client connection so that a later response is attributed to the wrong request. Same field rules as
 * requests; a response with both Transfer-Encoding and Content-Length is framed by the chunked coding
 * (RFC 9112 §6.3) and the connection is not reused afterwards.
 */
import {
  type HeaderField,
  HttpHeadError,
  connectionTokens,
  contentLengthOf,
  fieldsNamed,
  listValues,
  parseHeaderLines,
  splitHeadLines,
} from './http-fields.js';

export interface ResponseHead {
  version: '1.0' | '1.1';
  status: number;
  headers: HeaderField[];
  body: { kind: 'none' } | { kind: 'length'; length: number } | { kind: 'chunked' } | { kind: 'close' };
  /** The upstream connection cannot carry another request after this response. */
  close: boolean;
  headBytes: number;
}

export function parseResponseHead(bytes: Buffer, requestMethod: string): ResponseHead {
  const lines = splitHeadLines(bytes.toString('latin1'));
  const m = /^HTTP\/1\.([01]) ([0-9]{3})(?: [\t\x20-\x7e\x80-\xff]*)?$/.exec(lines[0] ?? '');
  if (!m) throw new HttpHeadError('malformed status line');
  const version = m[1] === '1' ? '1.1' : '1.0';
  const status = Number(m[2]);
  if (status < 100) throw new HttpHeadError('invalid status code');
  const headers = parseHeaderLines(lines, 1);
  let te = false;
  let hasConnection = false;
  for (const h of headers) {
    if (h.lname === 'transfer-encoding') te = true;
    else if (h.lname === 'connection') hasConnection = true;
  }
  const conn = hasConnection ? connectionTokens(headers) : null;
  let close =
    conn !== null ? conn.has('close') || (version === '1.0' && !conn.has('keep-alive')) : version === '1.0';

  let body: ResponseHead['body'];
  if (requestMethod === 'HEAD' || (status >= 100 && status < 200) || status === 204 || status === 304) {
    body = { kind: 'none' };
  } else if (requestMethod === 'CONNECT' && status >= 200 && status < 300) {
    body = { kind: 'none' };
  } else if (te) {
    const codings = listValues(headers, 'transfer-encoding').map((c) => c.toLowerCase());
    if (codings[codings.length - 1] === 'chunked') {
      body = { kind: 'chunked' };
      if (fieldsNamed(headers, 'content-length').length > 0) close = true;
    } else {
      body = { kind: 'close' };
      close = true;
    }
  } else {
    const cl = contentLengthOf(headers);
    if (cl !== null) body = cl === 0 ? { kind: 'none' } : { kind: 'length', length: cl };
    else {
      body = { kind: 'close' };
      close = true;
    }
  }
  return { version, status, headers, body, close, headBytes: bytes.length };
}
