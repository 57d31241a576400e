/**
 * Who may use the system gateway: members of the `carapace` group, and members of
 * `carapace-admin`, who see every user's sandboxes. Read from the host's group and passwd files
 * (a user's primary group counts too). Root is always an admin.
 */
import { readFileSync } from 'node:fs';

export const USER_GROUP = 'carapace';
export const ADMIN_GROUP = 'carapace-admin';

export interface GatewayUser {
  uid: number;
  name: string;
  admin: boolean;
}

export interface HostAccounts {
  groupFile: string;
  passwdFile: string;
}

export const HOST_ACCOUNTS: HostAccounts = { groupFile: '/etc/group', passwdFile: '/etc/passwd' };

function lines(path: string): string[][] {
  try {
    return readFileSync(path, 'utf8')
      .split('\n')
      .filter((l) => l && !l.startsWith('#'))
      .map((l) => l.split(':'));
  } catch {
    return [];
  }
}

/** The users (other than root) allowed to use the system gateway, each once. */
export function gatewayUsers(files: HostAccounts = HOST_ACCOUNTS): GatewayUser[] {
  const groups = new Map<string, { gid: number; members: string[] }>();
  for (const [name, , gid, members] of lines(files.groupFile)) {
    if (name === USER_GROUP || name === ADMIN_GROUP)
      groups.set(name, { gid: Number(gid), members: (members ?? '').split(',').filter(Boolean) });
  }
  const users = new Map<number, GatewayUser>();
  for (const [name, , uidText, gidText] of lines(files.passwdFile)) {
    const uid = Number(uidText);
    if (!name || !Number.isInteger(uid) || uid === 0) continue;
    const inGroup = (g: string) => {
      const group = groups.get(g);
      return group !== undefined && (group.members.includes(name) || group.gid === Number(gidText));
    };
    const admin = inGroup(ADMIN_GROUP);
    if (admin || inGroup(USER_GROUP)) users.set(uid, { uid, name, admin });
  }
  return [...users.values()].sort((a, b) => a.uid - b.uid);
}

/** A user's primary gid, from the passwd file; null when the uid has no entry. */
export function primaryGid(uid: number, files: HostAccounts = HOST_ACCOUNTS): Promise<number | null> {
  for (const [, , uidText, gidText] of lines(files.passwdFile)) {
    if (Number(uidText) === uid && gidText !== undefined) return Promise.resolve(Number(gidText));
  }
  return Promise.resolve(null);
}
