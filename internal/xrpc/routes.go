package xrpc

import "net/http"

// xrpcRoutes is the table of every XRPC method served locally: its verb,
// what authentication it needs, and its handler. Auth can be reviewed here
// on one screen.
func (s *Server) xrpcRoutes() map[string]route {
	get, post := http.MethodGet, http.MethodPost
	return map[string]route{
		// com.atproto.server
		"com.atproto.server.describeServer":     {method: get, handle: s.handleServerDescribeServer},
		"com.atproto.server.activateAccount":    {method: post, auth: authRequired, handle: s.handleServerActivateAccount},
		"com.atproto.server.deactivateAccount":  {method: post, auth: authRequired, handle: s.handleServerDeactivateAccount},
		"com.atproto.server.checkAccountStatus": {method: get, auth: authRequired, handle: s.handleServerCheckAccountStatus},

		// com.atproto.identity
		"com.atproto.identity.resolveHandle": {method: get, handle: s.handleIdentityResolveHandle},

		// com.atproto.repo
		"com.atproto.repo.createRecord": {method: post, auth: authRequired, bodyLimit: writeBodyLimit, handle: s.handleRepoCreateRecord},
		"com.atproto.repo.putRecord":    {method: post, auth: authRequired, bodyLimit: writeBodyLimit, handle: s.handleRepoPutRecord},
		"com.atproto.repo.deleteRecord": {method: post, auth: authRequired, handle: s.handleRepoDeleteRecord},
		"com.atproto.repo.applyWrites":  {method: post, auth: authRequired, bodyLimit: writeBodyLimit, handle: s.handleRepoApplyWrites},
		"com.atproto.repo.getRecord":    {method: get, handle: s.handleRepoGetRecord},
		"com.atproto.repo.listRecords":  {method: get, handle: s.handleRepoListRecords},
		"com.atproto.repo.describeRepo": {method: get, handle: s.handleRepoDescribeRepo},

		// com.atproto.sync
		"com.atproto.sync.getRepo":         {method: get, handle: s.handleSyncGetRepo},
		"com.atproto.sync.getLatestCommit": {method: get, handle: s.handleSyncGetLatestCommit},
		"com.atproto.sync.getRepoStatus":   {method: get, handle: s.handleSyncGetRepoStatus},
		"com.atproto.sync.listRepos":       {method: get, handle: s.handleSyncListRepos},
		"com.atproto.sync.getBlocks":       {method: get, handle: s.handleSyncGetBlocks},
		"com.atproto.sync.getRecord":       {method: get, handle: s.handleSyncGetRecord},
	}
}
