import { CLOSE_CODES } from "./generated.js";

/**
 * The gateway's messages and commands, protocol v2 (docs/WEBSOCKET_ENDPOINTS.md "Protocol v2"
 * in the gateway's repository).
 */

/** One message from the gateway: a reply, a live event, a refresh, a system message. */
export interface Message<Data = unknown> {
  topic: string;
  entity: string;
  action: string;
  resourceId?: string;
  data?: Data;
  metadata?: Record<string, string>;
  timestamp: string;
  /** The log position of a live event, or a reply's watermark; opaque. */
  cursor?: string;
}

/** `data` of `system.connected`. */
export interface ConnectedData {
  allowedTopics: string[];
  entity: string;
  roles: string[] | null;
  sectionId: string;
  /** When the token expires (RFC 3339), or null. */
  expiresAt: string | null;
}

/** `data` of `system.resumed`. */
export interface ResumedData {
  recovered: boolean;
  replayed?: number;
}

/** `data` of an `<entity>.error` reply. */
export interface ErrorData {
  error: string;
  code: string;
  field?: string;
}

/** A list command's payload (docs/WEBSOCKET_ENDPOINTS.md "List payload"). */
export interface ListQuery {
  page?: number;
  limit?: number;
  search?: string;
  sortBy?: string;
  sortOrder?: "ASC" | "DESC" | "asc" | "desc";
  filters?: Record<string, string>;
}

/** The close codes of protocol v2's refusals (generated from the gateway), and 1008. */
export const CloseCode = {
  ...CLOSE_CODES,
  tokenExpired: 1008,
} as const;

/** Close codes after which reconnecting cannot help (the same request is refused again). */
export const FINAL_CLOSE_CODES: ReadonlySet<number> = new Set([
  CloseCode.badRequest,
  CloseCode.forbidden,
  CloseCode.notFound,
]);

/** `data` of `system.ack`. */
export interface AckData {
  action: string;
  topic?: string;
}

/** `data` of `tables.selecting` (and, with `reason`, of `tables.released`). */
export interface HoldData {
  tableId: string;
  sectionId: string;
  selectedBy: string;
  selectedAt?: string;
  expiresAt?: string;
  reason?: string;
}

/** The `data` a topic's messages carry, where the protocol fixes it (`unknown` elsewhere:
 * an entity's events carry the platform's payloads as they are). */
export type DataOf<T extends string> = T extends "system.connected"
  ? ConnectedData
  : T extends "system.resumed"
    ? ResumedData
    : T extends "system.ack"
      ? AckData
      : T extends "tables.selecting" | "tables.released"
        ? HoldData
        : T extends `${string}.error`
          ? ErrorData
          : unknown;
