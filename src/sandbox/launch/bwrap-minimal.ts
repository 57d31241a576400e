/**
 * The smallest root a program from the host's /usr can run in, as bwrap arguments: /usr read-only,
 * and the merged-/usr symlinks (/lib, /lib64, /bin) that Debian has. The host probe and the tests
 * that exercise bwrap, the init or a seccomp program without a whole sandbox build on it.
 */
export const MERGED_USR_ROOT: readonly string[] = [
  '--ro-bind',
  '/usr',
  '/usr',
  '--symlink',
  'usr/lib',
  '/lib',
  '--symlink',
  'usr/lib64',
  '/lib64',
  '--symlink',
  'usr/bin',
  '/bin',
];
