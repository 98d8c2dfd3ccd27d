// What tests/browser/test_players.py loads into a page: the three clients,
// unchanged, as globals.  esbuild bundles this file with the packages that
// package.json pins; the bundle lives in the cache folder, never in git.
import { WebRTCPlayer } from "@eyevinn/webrtc-player";
import { WHEPClient } from "whip-whep/whep.js";
import { WHIPClient } from "whip-whep/whip.js";

window.Players = { WebRTCPlayer, WHEPClient, WHIPClient };
