// The current simple-whip-server (the janus-whip-server library) as a bench peer.
//
// The library has no REST call to make endpoints (an application calls
// createEndpoint), so this small application adds the one the Debian build
// has, POST <base>/create {id, room, label}, and shares its express app with
// the library, as the library's "server-shared" example does.  Everything
// else (the WHIP resources, Janode, the Janus session) is the library's own.
//
// Environment: PEER_DIR (a checkout of meetecho/simple-whip-server, npm
// installed), JANUS_WS (Janus's WebSocket address), PORT (loopback port).
import http from 'http';
import { createRequire } from 'module';
import path from 'path';
import { pathToFileURL } from 'url';

const peerDir = process.env.PEER_DIR;
const basePath = '/whip';
// express comes from the checkout's node_modules, the one the library uses.
const express = createRequire(path.join(peerDir, 'package.json'))('express');
const { JanusWhipServer } = await import(pathToFileURL(path.join(peerDir, 'src', 'whip.js')).href);

const app = express();
const server = new JanusWhipServer({
	janus: { address: process.env.JANUS_WS },
	rest: { app: app, basePath: basePath },
	debug: 'warn'
});
app.post(basePath + '/create', express.json(), (req, res) => {
	const { id, room, label } = req.body || {};
	try {
		server.createEndpoint({ id: id, room: room, label: label });
		res.sendStatus(200);
	} catch (err) {
		res.status(400).send(String(err && err.message));
	}
});
server.on('janus-disconnected', () => console.log('peer: lost Janus'));
await server.start();
// Listen only once Janus is connected, as the Debian server does.
http.createServer(app).listen(Number(process.env.PORT), '127.0.0.1', () => {
	console.log('peer: listening on ' + process.env.PORT);
});
