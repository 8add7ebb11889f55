// postgrest-sessions as a library: what the commands do, as plain functions.
//
//   import { deployLocal, compileFile, migrate } from "postgrest-sessions";
//
// Every command of the command line is one of these with its options read
// from argv; nothing here prints unless given a `log` function.

export { type CarryOverSummary, carryOver } from "./carry-over.js";
export { type Cluster, type ClusterOptions, startCluster } from "./cluster.js";
export { initProject } from "./commands/init.js";
export { postgrestConf } from "./commands/postgrest-conf.js";
export {
  DEFAULT_DATABASE,
  deployLocal,
  type LocalDeployment,
  type LocalDeploymentOptions,
} from "./deploy.js";
export { loadSql, SchemaLoadError, type SqlSource } from "./loader.js";
export {
  type CompiledDocument,
  type CompileOptions,
  compileFile,
  compileMarkdown,
  /** An alias of compileMarkdown: literate Markdown (text or bytes) to SQL, line for line. */
  compileMarkdown as compile,
  Md2SqlError,
} from "./md2sql.js";
export { type MigrateOptions, type MigrateResult, migrate } from "./migrate.js";
export { freePort } from "./net.js";
export { findPgBinaries, type PgBinaries } from "./pgbin.js";
export { describeFailures, type PgTapRun, runPgTap } from "./pgtap.js";
export {
  findPostgrestBinary,
  type PostgrestConfig,
  type PostgrestProcess,
  startPostgrest,
} from "./postgrest.js";
export {
  compileProject,
  type ProjectConfig,
  type ProjectDocument,
  projectDocuments,
  readProjectConfig,
} from "./project.js";
export {
  type ReloadOutcome,
  type WatchOptions,
  type WatchSession,
  watchDocument,
} from "./watch.js";
