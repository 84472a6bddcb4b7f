// Sidecar data plane (DESIGN §5.1): multiplexed tunnels between sidecars,
// the Attach stream to SDK agents, unary calls to agents without an SDK.
export { TunnelClient, type TunnelClientOptions, type TunnelState, defaultTunnelBackoff, defaultWindowSize } from "./tunnel-client.js";
export { TunnelServer, type TunnelServerOptions, type InboundHandler, type PeerInfo } from "./tunnel-server.js";
export { AttachHub, type AttachHubOptions } from "./attach-hub.js";
export { AgentClientPool, type AgentClientPoolOptions } from "./agent-client.js";
export type { CallOptions } from "./call-multiplexer.js";
export { CallCancellation, type CallSignal } from "./call-signal.js";
export type { DispatchOptions, DispatchOutcome } from "./dispatch.js";
export { type CallReply, type OpenFrameFields, decodeOpenInvocation } from "./frames.js";
export { CallStatusError, errorFromStatus, isRefusedBeforeDelivery, refusedBeforeDelivery, statusOfError } from "./call-status.js";

// Building blocks, exported for tests and for other multiplexed streams.
export { CallMultiplexer, type CallMultiplexerOptions } from "./call-multiplexer.js";
export { CallTable } from "./call-table.js";
export { FrameBatcher, type FrameBatcherOptions, type FrameStream } from "./frame-batcher.js";
export { ChunkQueue } from "./chunk-queue.js";
export { type Timers, type TimerHandle, systemTimers } from "./timers.js";
export { cancelFrame, dataFrame, endFrame, openFrame, pingFrame, pongFrame } from "./frames.js";
