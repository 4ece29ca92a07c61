// presence-poller on Azure: a Flex Consumption function app (Linux, custom
// handler) with its storage account (the Functions runtime, the deployment
// package, and the poller's table), a Service Bus namespace with the work
// queue (sessions on), Application Insights, and a Key Vault that holds
// every secret the app reads; the app reaches the vault, its storage and
// the queue with its own managed identity, which is also the app
// registration's federated credential (no client secret or certificate).
//
// main.json is this file compiled to an ARM template, kept in step by hand
// (deploy/deploy_test.go compares their resources). docs/azure.md walks
// through deploying it.

targetScope = 'resourceGroup'

@description('Azure region of every resource (one where Flex Consumption is offered).')
param location string = resourceGroup().location

@description('Prefix of the resource names; a hash of the resource group makes them unique.')
@minLength(3)
@maxLength(11)
param baseName string = 'presence'

@description('The app registration\'s Application (client) ID.')
param entraClientId string

@description('Where people sign in: organizations (any work account), or one tenant.')
param entraAuthority string = 'https://login.microsoftonline.com/organizations'

@description('The address people open to sign in; empty: https://<function app>.azurewebsites.net. The redirect URI is <publicUrl>/auth/end.')
param publicUrl string = ''

@description('base64 of 32 random bytes (openssl rand -base64 32): encrypts token caches and seals the sign-in state.')
@secure()
param pollerSecretKey string

@description('Protects /api/* (Authorization: Bearer <key>); at least 16 characters (openssl rand -base64 24).')
@secure()
param pollerApiKey string

@description('How often an unchanged presence is republished (SPEC §9 graph.heartbeat).')
param heartbeat string = '15m'

@description('The most instances the scale controller may run at once.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Memory of one instance (MB).')
@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048

var token = toLower(uniqueString(resourceGroup().id))
var appName = '${baseName}-poller-${token}'
var storageName = take('${replace(baseName, '-', '')}${token}', 24)
var serviceBusName = '${baseName}-sb-${token}'
var vaultName = take('${baseName}-kv-${token}', 24)
var workQueueName = 'presence-work'
var deploymentContainerName = 'app-package'
var effectivePublicUrl = empty(publicUrl) ? 'https://${appName}.azurewebsites.net' : publicUrl

// Built-in role definitions.
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  serviceBusDataReceiver: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${baseName}-logs-${token}'
  location: location
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: '${baseName}-ai-${token}'
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
  }
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageName
  location: location
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource pollerTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: 'presencepoller'
}

resource serviceBus 'Microsoft.ServiceBus/namespaces@2021-11-01' = {
  name: serviceBusName
  location: location
  sku: {
    name: 'Standard'
    tier: 'Standard'
  }
}

// One message per work item (≤ 650 people of one tenant), session = tenant.
resource workQueue 'Microsoft.ServiceBus/namespaces/queues@2021-11-01' = {
  parent: serviceBus
  name: workQueueName
  properties: {
    requiresSession: true
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: 'PT10M'
    lockDuration: 'PT1M'
    maxDeliveryCount: 10
    defaultMessageTimeToLive: 'PT5M'
    deadLetteringOnMessageExpiration: false
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: vaultName
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
  }
}

resource secretKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'poller-secret-key'
  properties: {
    value: pollerSecretKey
  }
}

resource apiKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'poller-api-key'
  properties: {
    value: pollerApiKey
  }
}

resource serviceBusSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'service-bus-connection-string'
  properties: {
    value: listKeys(resourceId('Microsoft.ServiceBus/namespaces/authorizationRules', serviceBus.name, 'RootManageSharedAccessKey'), '2021-11-01').primaryConnectionString
  }
}

resource tablesSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'tables-connection-string'
  properties: {
    value: 'DefaultEndpointsProtocol=https;AccountName=${storage.name};AccountKey=${storage.listKeys().keys[0].value};EndpointSuffix=${environment().suffixes.storage}'
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: '${baseName}-plan-${token}'
  location: location
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: appName
  location: location
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: 'SystemAssigned'
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'custom'
        version: '1.0'
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      appSettings: [
        {
          name: 'AzureWebJobsStorage__accountName'
          value: storage.name
        }
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: appInsights.properties.ConnectionString
        }
        {
          name: 'ServiceBusConnection__fullyQualifiedNamespace'
          value: '${serviceBus.name}.servicebus.windows.net'
        }
        {
          name: 'WORK_QUEUE'
          value: workQueueName
        }
        {
          name: 'PUBLIC_URL'
          value: effectivePublicUrl
        }
        {
          name: 'ENTRA_CLIENT_ID'
          value: entraClientId
        }
        {
          name: 'ENTRA_AUTHORITY'
          value: entraAuthority
        }
        {
          name: 'ENTRA_MANAGED_IDENTITY'
          value: 'system'
        }
        {
          name: 'HEARTBEAT'
          value: heartbeat
        }
        {
          name: 'LOG_LEVEL'
          value: 'info'
        }
        {
          name: 'POLLER_SECRET_KEY'
          value: '@Microsoft.KeyVault(SecretUri=${secretKeySecret.properties.secretUri})'
        }
        {
          name: 'POLLER_API_KEY'
          value: '@Microsoft.KeyVault(SecretUri=${apiKeySecret.properties.secretUri})'
        }
        {
          name: 'SERVICE_BUS_CONNECTION_STRING'
          value: '@Microsoft.KeyVault(SecretUri=${serviceBusSecret.properties.secretUri})'
        }
        {
          name: 'TABLES_CONNECTION_STRING'
          value: '@Microsoft.KeyVault(SecretUri=${tablesSecret.properties.secretUri})'
        }
      ]
    }
  }
  dependsOn: [
    deploymentContainer
    pollerTable
    workQueue
  ]
}

resource appBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: storage
  name: guid(storage.id, app.id, roles.storageBlobDataOwner)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource appQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: storage
  name: guid(storage.id, app.id, roles.storageQueueDataContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource appServiceBusReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: serviceBus
  name: guid(serviceBus.id, app.id, roles.serviceBusDataReceiver)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.serviceBusDataReceiver)
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource appSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: vault
  name: guid(vault.id, app.id, roles.keyVaultSecretsUser)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

@description('The function app to publish the package to (az functionapp deployment source config-zip, or func azure functionapp publish).')
output functionAppName string = app.name

@description('Where people sign in; register <publicUrl>/auth/end as the redirect URI.')
output publicUrl string = effectivePublicUrl

@description('The managed identity to name in the app registration\'s federated credential (its subject).')
output managedIdentityPrincipalId string = app.identity.principalId

@description('The issuer of that federated credential.')
output federatedCredentialIssuer string = '${environment().authentication.loginEndpoint}${subscription().tenantId}/v2.0'

output serviceBusNamespace string = serviceBus.name
