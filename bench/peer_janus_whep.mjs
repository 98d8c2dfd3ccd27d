// whep_ttff's peer: janus-whep-server (npm) as its README shows it, on the bench's Janus.
//
// Copied at run time next to its node_modules by bench/peer_janus_whep.py
// (ESM resolves packages from the script's own folder).  One argument, JSON:
// {"janus": "ws://...", "port": N, "basePath": "/whep"}.  The library gets an
// Express app of ours ("rest.app" in its README), so that the bench can make
// and drop endpoints over HTTP before timing, under /bench (never timed):
//   POST   /bench/endpoints        {"id": "...", "mountpoint": N}  -> 201
//   DELETE /bench/endpoints/:id                                    -> 200
//   GET    /bench/subscribers                                      -> {"subscribers": [...]}
// The bench waits for the library's own GET <basePath>/healthcheck, which
// exists only once the library is connected to Janus.
import express from 'express';
import { JanusWhepServer } from 'janus-whep-server';

const config = JSON.parse(process.argv[2]);
const app = express();

// Timing, the peer's side of the bench's probes: when each WHEP POST reached
// the app and when its response was handed to the socket, on CLOCK_MONOTONIC
// (process.hrtime), the clock of the bench's viewers.  One log line per POST.
const endpoints = `${config.basePath}/endpoint/`;
app.use((req, res, next) => {
	if (req.method === 'POST' && req.path.startsWith(endpoints)) {
		const tApp = process.hrtime.bigint();
		res.on('finish', () => {
			const record = { t_app: Number(tApp) / 1e9, t_finish: Number(process.hrtime.bigint()) / 1e9,
				status: res.statusCode, location: res.getHeader('location') || null };
			console.log(`bench-probe ${JSON.stringify(record)}`);
		});
	}
	next();
});

app.post('/bench/endpoints', express.json(), (req, res) => {
	try {
		server.createEndpoint({ id: req.body.id, mountpoint: req.body.mountpoint });
		res.status(201).json({ id: req.body.id });
	} catch (err) {
		res.status(409).json({ error: String(err) });
	}
});
app.delete('/bench/endpoints/:id', async (req, res) => {
	try {
		await server.destroyEndpoint({ id: req.params.id });
		res.status(200).json({});
	} catch (err) {
		res.status(404).json({ error: String(err) });
	}
});
app.get('/bench/subscribers', (_req, res) => {
	res.json({ subscribers: server.listSubscribers() });
});

const server = new JanusWhepServer({
	janus: { address: config.janus },
	rest: { app: app, basePath: config.basePath },
});
await server.start();
const listener = app.listen(config.port, '127.0.0.1', () => {
	console.log(`bench peer: listening on 127.0.0.1:${config.port}`);
});

async function stop(signal) {
	console.log(`bench peer: ${signal}, stopping`);
	listener.close();
	// The library's own destroy() first; where it fails (1.1.0 calls close() on a
	// janode session, which has none), end the Janus session ourselves, so that
	// the bench's leak check sees what the library left, not what we did.
	try {
		await server.destroy();
	} catch (err) {
		console.log(`bench peer: JanusWhepServer.destroy() failed: ${err}`);
		await server.janus?.destroy().catch((e) => console.log(`bench peer: session destroy: ${e}`));
	}
	process.exit(0);
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
