/** A mount plan (mount-plan.ts) as bubblewrap's arguments. */
import { DEV_SHM_BYTES, type MountOp, type MountPlan } from './mount-plan.js';

/**
 * bwrap arguments for a mount plan, in order (parents before children). Every tree-bind and
 * mount-bind must have been opened (fd-bind) by then; `fdBind` says how bwrap gets each fd.
 */
export function mountArgs(
  plan: MountPlan,
  fdBind: (op: Extract<MountOp, { kind: 'fd-bind' }>) => string[],
): string[] {
  const args: string[] = [];
  for (const op of plan.ops) {
    switch (op.kind) {
      case 'ro-bind':
        args.push('--ro-bind', op.host, op.path);
        break;
      case 'bind':
        args.push('--bind', op.host, op.path);
        break;
      case 'fd-bind':
        args.push(...fdBind(op));
        break;
      case 'tree-bind':
      case 'mount-bind':
        throw new Error(`internal: ${op.path} was not opened before the launch`);
      case 'symlink':
        args.push('--symlink', op.target, op.path);
        break;
      case 'tmpfs':
        if (op.sizeBytes !== undefined) args.push('--size', String(op.sizeBytes));
        args.push('--tmpfs', op.path);
        if (op.readOnly) args.push('--remount-ro', op.path);
        break;
      case 'proc':
        args.push('--proc', op.path);
        break;
      case 'dev':
        // bwrap's /dev is a tmpfs the sandbox owns: read-only, with a bounded tmpfs of its own for
        // shared memory. The device nodes are bind mounts, which stay writable.
        args.push('--dev', op.path);
        args.push('--size', String(DEV_SHM_BYTES), '--tmpfs', `${op.path}/shm`, '--remount-ro', op.path);
        break;
      case 'dir':
        args.push('--dir', op.path);
        break;
    }
  }
  return args;
}
