import { Command } from "commander";
import { addCtlCommand } from "./ctl-command.js";
import { addDashboardTokenCommand } from "./dashboard-token-command.js";
import { addLifecycleCommands } from "./lifecycle-commands.js";
import { addSecurityCommands } from "./security-commands.js";
import { addServerCommand } from "./server-command.js";
import { addSidecarCommand } from "./sidecar-command.js";

const program = new Command("agentmesh")
  .description("agentmesh: a gRPC service mesh for AI agents")
  .version("0.1.0")
  .showHelpAfterError();
addServerCommand(program);
addSidecarCommand(program);
const ctl = addCtlCommand(program);
addSecurityCommands(ctl);
addLifecycleCommands(ctl);
addDashboardTokenCommand(ctl);
await program.parseAsync(process.argv);
