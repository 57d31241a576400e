export * from './ocsf.js';
export * from './audit-log.js';
