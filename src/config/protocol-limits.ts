/** Bounds of a protocol's step deadlines, shared by the protocol file and LUCIUS_STEP_TIMEOUT. */

/** A step's deadline is at most a week away: longer work should be split into steps. */
export const MAX_STEP_TIMEOUT_SECONDS = 7 * 86400;
/** What a step without `timeoutSeconds` gets when LUCIUS_STEP_TIMEOUT is not set: one hour. */
export const DEFAULT_STEP_TIMEOUT_SECONDS = 3600;
