/**
 * `@mesaya/realtime`: the client of the mesa-ya realtime gateway (protocol v2).
 *
 * See README.md in this package for the API.
 */
export { connect, RealtimeClient, RealtimeError, } from "./client.js";
export { cursorPositions, isAfter, LiveCollection } from "./collection.js";
export { LiveSelections } from "./selections.js";
export { CloseCode, FINAL_CLOSE_CODES, } from "./messages.js";
export { CLOSE_CODES, ENTITIES, } from "./generated.js";
//# sourceMappingURL=index.js.map