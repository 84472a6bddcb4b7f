/** Explicit limits on what a manifest may carry; documented in the proto comments. */
export const manifestLimits = {
  nameMaxLength: 63,
  capabilitiesMax: 64,
  capabilityNameMaxLength: 128,
  attributesMax: 32,
  attributeValueMaxBytes: 256,
  labelsMax: 64,
  labelNameMaxLength: 63,
  labelPrefixMaxLength: 253,
  labelValueMaxLength: 63,
  /** Values of one In / NotIn selector requirement. */
  selectorValuesMax: 64,
  /** Invoke metadata: entries, key length ([A-Za-z0-9._-]), value and total bytes. */
  metadataEntriesMax: 64,
  metadataKeyMaxLength: 128,
  metadataValueMaxBytes: 4096,
  metadataTotalMaxBytes: 16 * 1024,
  agentCardMaxBytes: 64 * 1024,
  instanceIdMaxLength: 64,
  endpointMaxLength: 261,
  hostMaxLength: 253,
  minHeartbeatIntervalMs: 100,
  maxHeartbeatIntervalMs: 60_000,
  defaultHeartbeatIntervalMs: 1000,
  maxHungRestartAfterMs: 86_400_000,
} as const;
