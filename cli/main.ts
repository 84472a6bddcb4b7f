import { logVerbosity, setLogVerbosity } from "@grpc/grpc-js";
import { Command } from "commander";
import { reportFailure } from "./cli-error.js";
import { addCtlCommand } from "./ctl-command.js";
import { addDashboardTokenCommand } from "./dashboard-token-command.js";
import { addLifecycleCommands } from "./lifecycle-commands.js";
import { isDebugLevel } from "./options.js";
import { addSecurityCommands } from "./security-commands.js";
import { addServerCommand } from "./server-command.js";
import { addSidecarCommand } from "./sidecar-command.js";

// grpc-js writes its own errors to stderr ("E No address added out of total 1
// resolved"); every failure reaches the operator once, through reportFailure.
// GRPC_VERBOSITY / GRPC_TRACE still turn its diagnostics on for debugging.
if (process.env.GRPC_VERBOSITY === undefined && process.env.GRPC_TRACE === undefined) {
  setLogVerbosity(logVerbosity.NONE);
}

let debug = isDebugLevel(process.env.AGENTMESH_LOG_LEVEL);

const program = new Command("agentmesh")
  .description("agentmesh: a gRPC service mesh for AI agents")
  .version("0.1.0")
  // Usage errors throw (exit 2, README "Exit codes") instead of exiting with commander's 1;
  // inherited by every command added below.
  .exitOverride()
  // commander puts "(Did you mean …?)" on a line of its own: one line per failure.
  .configureOutput({ outputError: (text, write) => write(text.replace(/\n(?=\(Did you mean)/, " ")) })
  .hook("preAction", (_program, action) => {
    debug = isDebugLevel(action.optsWithGlobals().logLevel);
  });
addServerCommand(program);
addSidecarCommand(program);
const ctl = addCtlCommand(program);
addSecurityCommands(ctl);
addLifecycleCommands(ctl);
addDashboardTokenCommand(ctl);

try {
  await program.parseAsync(process.argv);
} catch (error) {
  // Exit at once: a half-started server or an open channel must not keep the process alive.
  process.exit(reportFailure(error, { debug, write: (text) => process.stderr.write(text) }));
}
