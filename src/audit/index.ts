export * from './ocsf.js';
export * from './audit-log.js';
export * from './audit-files.js';
