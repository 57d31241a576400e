/**
 * Secrets at rest (a sandbox's credentials): AES-256-GCM under a key that lives in a file of its
 * own, `<state>/secret.key` (32 random bytes, mode 0600, owned by the gateway's user), never in the
 * database. A copy of the database alone reveals nothing; each sealed value is bound to what it is
 * for (the sandbox id and name, as additional data), so one cannot be moved to another sandbox.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { closeSync, fstatSync, openSync, readFileSync, writeSync, constants } from 'node:fs';

const KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;

export class SecretBoxError extends Error {
  override name = 'SecretBoxError';
  readonly code = 'SECRET_KEY_INVALID';
}

export class SecretBox {
  private constructor(private readonly key: Buffer) {}

  /** The box of the key in `path`, made on first use. A key readable by others is refused. */
  static open(path: string): SecretBox {
    try {
      const fd = openSync(
        path,
        constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
        0o600,
      );
      try {
        writeSync(fd, randomBytes(KEY_BYTES));
      } finally {
        closeSync(fd);
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      const st = fstatSync(fd);
      if (!st.isFile() || (st.mode & 0o077) !== 0 || st.uid !== (process.getuid?.() ?? st.uid)) {
        throw new SecretBoxError(
          `${path} must be a file of the gateway's user, mode 0600: fix it or remove it (sealed secrets are then lost)`,
        );
      }
      const key = readFileSync(fd);
      if (key.length !== KEY_BYTES) throw new SecretBoxError(`${path} is not a ${KEY_BYTES}-byte key`);
      return new SecretBox(key);
    } finally {
      closeSync(fd);
    }
  }

  seal(plain: string, context: string): Uint8Array {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    cipher.setAAD(Buffer.from(context));
    const body = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
    return Buffer.concat([iv, cipher.getAuthTag(), body]);
  }

  unseal(sealed: Uint8Array, context: string): string {
    const buf = Buffer.from(sealed);
    const decipher = createDecipheriv('aes-256-gcm', this.key, buf.subarray(0, IV_BYTES));
    decipher.setAAD(Buffer.from(context));
    decipher.setAuthTag(buf.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
    return Buffer.concat([decipher.update(buf.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]).toString(
      'utf8',
    );
  }
}
