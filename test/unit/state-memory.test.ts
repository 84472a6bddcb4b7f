import { MemoryCertificateStore } from "../../services/identity/adapters/memory-certificate-store.js";
import { MemoryJoinTokenStore } from "../../services/identity/adapters/memory-join-token-store.js";
import { MemoryRevocationStore } from "../../services/identity/adapters/memory-revocation-store.js";
import { MemoryDeploymentStore } from "../../services/orchestrator/adapters/memory-deployment-store.js";
import { MemoryChangeLog } from "../../services/state/adapters/memory-change-log.js";
import { describeCertificateStore } from "../contract/certificate-store.js";
import { describeChangeLog } from "../contract/change-log.js";
import { describeDeploymentStore } from "../contract/deployment-store.js";
import { describeJoinTokenStore } from "../contract/join-token-store.js";
import { describePortsOnChangeLog } from "../contract/port-suites.js";
import { describeRevocationStore } from "../contract/revocation-store.js";

describeChangeLog("memory", async () => ({ open: async () => new MemoryChangeLog() }));

describePortsOnChangeLog("memory", async () => {
  const log = new MemoryChangeLog();
  return { log, replica: log, close: () => log.close() };
});

// The plain in-memory adapters keep to the same contracts.
const alone = <T>(store: T) => async () => ({ store, replica: store, close: async () => undefined });
describeJoinTokenStore("memory", () => alone(new MemoryJoinTokenStore())());
describeCertificateStore("memory", () => alone(new MemoryCertificateStore())());
describeRevocationStore("memory", () => alone(new MemoryRevocationStore())());
describeDeploymentStore("memory", () => alone(new MemoryDeploymentStore())());
