import { MemoryChangeLog } from "../../services/state/adapters/memory-change-log.js";
import { describeChangeLog } from "../contract/change-log.js";

describeChangeLog("memory", async () => ({ open: async () => new MemoryChangeLog() }));
