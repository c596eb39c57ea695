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
		"com.atproto.server.activateAccount":    {method: post, auth: authOwner, handle: s.handleServerActivateAccount},
		"com.atproto.server.deactivateAccount":  {method: post, auth: authOwner, handle: s.handleServerDeactivateAccount},
		"com.atproto.server.checkAccountStatus": {method: get, auth: authRequired, handle: s.handleServerCheckAccountStatus},
		"com.atproto.server.createSession":      {method: post, handle: s.handleServerCreateSession},
		"com.atproto.server.refreshSession":     {method: post, auth: authRefresh, handle: s.handleServerRefreshSession},
		"com.atproto.server.getSession":         {method: get, auth: authRequired, handle: s.handleServerGetSession},
		"com.atproto.server.deleteSession":      {method: post, auth: authRefresh, handle: s.handleServerDeleteSession},
		"com.atproto.server.createAppPassword":  {method: post, auth: authOwner, handle: s.handleServerCreateAppPassword},
		"com.atproto.server.listAppPasswords":   {method: get, auth: authRequired, handle: s.handleServerListAppPasswords},
		"com.atproto.server.revokeAppPassword":  {method: post, auth: authOwner, handle: s.handleServerRevokeAppPassword},

		// The operator's own methods (admin token only).
		"app.stratus.admin.rotateJwtSecret":  {method: post, auth: authAdmin, handle: s.handleAdminRotateJWTSecret},
		"app.stratus.admin.setPassword":      {method: post, auth: authAdmin, handle: s.handleAdminSetPassword},
		"app.stratus.admin.rotateAdminToken": {method: post, auth: authAdmin, handle: s.handleAdminRotateAdminToken},
		"app.stratus.admin.rotateSigningKey": {method: post, auth: authAdmin, handle: s.handleAdminRotateSigningKey},
		"app.stratus.admin.emitIdentity":     {method: post, auth: authAdmin, handle: s.handleAdminEmitIdentity},
		// The PLC token of requestPlcOperationSignature goes to the operator.
		"app.stratus.admin.getPlcOperationToken": {method: get, auth: authAdmin, handle: s.handleAdminGetPlcOperationToken},
		"app.stratus.admin.listOAuthGrants":      {method: get, auth: authAdmin, handle: s.handleAdminListOAuthGrants},
		"app.stratus.admin.revokeOAuthGrant":     {method: post, auth: authAdmin, handle: s.handleAdminRevokeOAuthGrant},
		"app.stratus.admin.getStatus":            {method: get, auth: authAdmin, handle: s.handleAdminGetStatus},

		// com.atproto.identity
		"com.atproto.identity.resolveHandle": {method: get, handle: s.handleIdentityResolveHandle},
		// App passwords may change the handle, as in the reference; PLC
		// signing and submitting are owner-only.
		"com.atproto.identity.updateHandle":                 {method: post, auth: authRequired, handle: s.handleIdentityUpdateHandle},
		"com.atproto.identity.getRecommendedDidCredentials": {method: get, auth: authRequired, handle: s.handleIdentityGetRecommendedDidCredentials},
		"com.atproto.identity.requestPlcOperationSignature": {method: post, auth: authOwner, handle: s.handleIdentityRequestPlcOperationSignature},
		"com.atproto.identity.signPlcOperation":             {method: post, auth: authOwner, handle: s.handleIdentitySignPlcOperation},
		"com.atproto.identity.submitPlcOperation":           {method: post, auth: authOwner, handle: s.handleIdentitySubmitPlcOperation},

		// Service tokens for other services.
		"com.atproto.server.getServiceAuth": {method: get, auth: authRequired, handle: s.handleServerGetServiceAuth},

		// app.bsky: preferences are kept here; these reads are forwarded
		// to the AppView with the account's newest records merged in.
		"app.bsky.actor.getPreferences": {method: get, auth: authRequired, handle: s.handleActorGetPreferences},
		"app.bsky.actor.putPreferences": {method: post, auth: authRequired, handle: s.handleActorPutPreferences},
		"app.bsky.feed.getTimeline":     {method: get, auth: authRequired, handle: s.handleReadAfterWrite},
		"app.bsky.feed.getAuthorFeed":   {method: get, auth: authRequired, handle: s.handleReadAfterWrite},
		"app.bsky.feed.getPostThread":   {method: get, auth: authRequired, handle: s.handleReadAfterWrite},
		"app.bsky.actor.getProfile":     {method: get, auth: authRequired, handle: s.handleReadAfterWrite},
		"app.bsky.actor.getProfiles":    {method: get, auth: authRequired, handle: s.handleReadAfterWrite},

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
		"com.atproto.sync.subscribeRepos":  {method: get, handle: s.handleSyncSubscribeRepos},

		// Blobs (uploadBlob reads its body as a stream, with its own limit).
		// Other services (the video service) upload on the account's
		// behalf with a service JWT bound to this method.
		"com.atproto.repo.uploadBlob":       {method: post, auth: authService, streamsBody: true, handle: s.handleRepoUploadBlob},
		"com.atproto.repo.listMissingBlobs": {method: get, auth: authRequired, handle: s.handleRepoListMissingBlobs},
		"com.atproto.sync.getBlob":          {method: get, handle: s.handleSyncGetBlob},
		"com.atproto.sync.listBlobs":        {method: get, handle: s.handleSyncListBlobs},

		// Account migration: createAccount authorises itself with a
		// service token from the account's current host (package
		// migration); importRepo streams its CAR body with its own limit.
		"com.atproto.server.createAccount": {method: post, handle: s.handleServerCreateAccount},
		"com.atproto.repo.importRepo":      {method: post, auth: authOwner, streamsBody: true, handle: s.handleRepoImportRepo},
	}
}
