import { ChangeLogCertificateStore } from "../../services/identity/adapters/change-log-certificate-store.js";
import { ChangeLogJoinTokenStore } from "../../services/identity/adapters/change-log-join-token-store.js";
import { ChangeLogRevocationStore } from "../../services/identity/adapters/change-log-revocation-store.js";
import { ChangeLogDeploymentStore } from "../../services/orchestrator/adapters/change-log-deployment-store.js";
import type { ChangeLog } from "../../services/state/ports.js";
import { describeCertificateStore } from "./certificate-store.js";
import { describeDeploymentStore } from "./deployment-store.js";
import { describeJoinTokenStore } from "./join-token-store.js";
import { describeRevocationStore } from "./revocation-store.js";
import type { StoreHarness } from "./store-harness.js";

/** Two handles on one fresh change log (the same handle twice where the store is its own storage). */
export interface ChangeLogPair {
  log: ChangeLog;
  replica: ChangeLog;
  close(): Promise<void>;
}

/** Runs every port's contract on the adapters built on the change log. */
export function describePortsOnChangeLog(adapterName: string, openPair: () => Promise<ChangeLogPair>): void {
  const harness =
    <T>(build: (log: ChangeLog) => T) =>
    async (): Promise<StoreHarness<T>> => {
      const pair = await openPair();
      return { store: build(pair.log), replica: build(pair.replica), close: () => pair.close() };
    };
  describeJoinTokenStore(`change log on ${adapterName}`, harness((log) => new ChangeLogJoinTokenStore(log)));
  describeCertificateStore(`change log on ${adapterName}`, harness((log) => new ChangeLogCertificateStore(log)));
  describeRevocationStore(`change log on ${adapterName}`, harness((log) => new ChangeLogRevocationStore(log)));
  describeDeploymentStore(`change log on ${adapterName}`, harness((log) => new ChangeLogDeploymentStore(log)));
}
