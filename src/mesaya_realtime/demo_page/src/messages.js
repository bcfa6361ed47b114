/**
 * The gateway's messages and commands, protocol v2 (docs/WEBSOCKET_ENDPOINTS.md "Protocol v2"
 * in the gateway's repository).
 */
/** The close codes of protocol v2's refusals. */
export const CloseCode = {
    badRequest: 4400,
    unauthorized: 4401,
    forbidden: 4403,
    notFound: 4404,
    authenticationTimeout: 4408,
    tooManyConnections: 4429,
    unavailable: 4503,
    tokenExpired: 1008,
};
/** Close codes after which reconnecting cannot help (the same request is refused again). */
export const FINAL_CLOSE_CODES = new Set([
    CloseCode.badRequest,
    CloseCode.forbidden,
    CloseCode.notFound,
]);
//# sourceMappingURL=messages.js.map