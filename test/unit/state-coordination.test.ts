import { ManualClock } from "../../sdk/ts/src/core/clock.js";
import { InProcessCoordination } from "../../services/state/adapters/in-process-coordination.js";
import { describeCoordination } from "../contract/coordination.js";

describeCoordination("in-process", async () => {
  const clock = new ManualClock();
  const coordination = new InProcessCoordination(clock);
  return { replicaA: coordination, replicaB: coordination, clock, close: () => coordination.close() };
});
