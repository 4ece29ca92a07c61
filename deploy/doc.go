// Package deploy holds presence-poller's deployment as code: functions/ is
// the Azure Functions app (host.json, one folder per function, the
// configuration template), azure/ the Bicep file that creates its Azure
// resources and the ARM template compiled from it. The package has no code;
// its tests keep those files consistent with each other and with the
// poller.
package deploy
