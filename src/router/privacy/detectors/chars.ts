/** What every built-in detector shares: the span it reports, and ASCII character classes by code. */
export interface Span {
  start: number;
  end: number;
}

export type Detector = (text: string, out: Span[]) => void;

export const isDigit = (c: number): boolean => c >= 48 && c <= 57;
export const isUpper = (c: number): boolean => c >= 65 && c <= 90;
export const isLower = (c: number): boolean => c >= 97 && c <= 122;
export const isAlnum = (c: number): boolean => isDigit(c) || isUpper(c) || isLower(c);
export const isHex = (c: number): boolean => isDigit(c) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102);
export const isBase64Url = (c: number): boolean => isAlnum(c) || c === 45 || c === 95;
export const isWordish = (c: number): boolean => isAlnum(c) || c === 95;
