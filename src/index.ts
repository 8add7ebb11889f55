// postgrest-sessions as a library: what the commands do, as plain functions.
//
//   import { deployLocal, compileFile, migrate } from "postgrest-sessions";
//
// Every command of the command line is one of these with its options read
// from argv; nothing here prints unless given a `log` function.

export { initProject } from "./commands/init.js";
export { postgrestConf } from "./commands/postgrest-conf.js";
export { loadSql, SchemaLoadError, type SqlSource } from "./document/loader.js";
export {
  type CompiledDocument,
  type CompileOptions,
  compileFile,
  compileMarkdown,
  /** An alias of compileMarkdown: literate Markdown (text or bytes) to SQL, line for line. */
  compileMarkdown as compile,
  Md2SqlError,
} from "./document/md2sql.js";
export { type MigrateOptions, type MigrateResult, migrate } from "./document/migrate.js";
export { describeFailures, type PgTapRun, runPgTap } from "./document/pgtap.js";
export {
  compileProject,
  type ProjectConfig,
  type ProjectDocument,
  projectDocuments,
  readProjectConfig,
} from "./document/project.js";
export { freePort } from "./net.js";
export { type Cluster, type ClusterOptions, startCluster } from "./postgres/cluster.js";
export { findPgBinaries, type PgBinaries } from "./postgres/pgbin.js";
export { type CarryOverSummary, carryOver } from "./serving/carry-over.js";
export {
  DEFAULT_DATABASE,
  deployLocal,
  type LocalDeployment,
  type LocalDeploymentOptions,
} from "./serving/deploy.js";
export {
  findPostgrestBinary,
  type PostgrestConfig,
  type PostgrestProcess,
  startPostgrest,
} from "./serving/postgrest.js";
export {
  type ReloadOutcome,
  type WatchOptions,
  type WatchSession,
  watchDocument,
} from "./serving/watch.js";
