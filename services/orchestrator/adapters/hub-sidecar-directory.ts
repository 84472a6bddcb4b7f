import type { ConnectHub, ConnectSession } from "../connect-hub.js";
import type { SidecarDirectory, SidecarDirectoryListener, SidecarSession } from "../ports.js";

/**
 * The sidecars of this process only: the embedded single-server default. No
 * store writes, no timers; the sessions are the hub's own objects.
 */
export class HubSidecarDirectory implements SidecarDirectory {
  constructor(private readonly hub: ConnectHub) {}

  sessions(): readonly SidecarSession[] {
    return openSessions(this.hub);
  }

  sessionFor(instanceId: string): SidecarSession | undefined {
    return this.hub.sessionFor(instanceId);
  }

  watch(listener: SidecarDirectoryListener): () => void {
    return this.hub.watchSessions({
      opened: (session) => listener.onSessionOpened?.(session),
      closed: (session) => listener.onSessionClosed?.(session),
      commandResult: (sidecarId, result) => listener.onCommandResult?.(sidecarId, result),
    });
  }
}

/** The hub's sessions past Hello and still open. */
export function openSessions(hub: ConnectHub): ConnectSession[] {
  return hub.allSessions().filter((session) => session.hello !== undefined && !session.closed);
}
