/**
 * `@mesaya/realtime`: the client of the mesa-ya realtime gateway (protocol v2).
 *
 * See README.md in this package for the API.
 */

export {
  connect,
  RealtimeClient,
  RealtimeError,
  type ConnectionState,
  type ConnectOptions,
  type StateChange,
  type WebSocketFactory,
  type WebSocketLike,
} from "./client.js";
export { cursorPositions, isAfter, LiveCollection, type CollectionOptions, type Item } from "./collection.js";
export { LiveSelections, type Hold } from "./selections.js";
export {
  CloseCode,
  FINAL_CLOSE_CODES,
  type AckData,
  type ConnectedData,
  type DataOf,
  type HoldData,
  type ErrorData,
  type ListQuery,
  type Message,
  type ResumedData,
} from "./messages.js";
export {
  CLOSE_CODES,
  ENTITIES,
  type Command,
  type Entity,
  type EntityProtocol,
  type ErrorCode,
  type EventAction,
  type SystemTopic,
  type Topic,
} from "./generated.js";
