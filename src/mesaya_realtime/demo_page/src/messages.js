import { CLOSE_CODES } from "./generated.js";
/** The close codes of protocol v2's refusals (generated from the gateway), and 1008. */
export const CloseCode = {
    ...CLOSE_CODES,
    tokenExpired: 1008,
};
/** Close codes after which reconnecting cannot help (the same request is refused again). */
export const FINAL_CLOSE_CODES = new Set([
    CloseCode.badRequest,
    CloseCode.forbidden,
    CloseCode.notFound,
]);
//# sourceMappingURL=messages.js.map