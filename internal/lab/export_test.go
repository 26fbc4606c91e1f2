package lab

var (
	EncryptDataParams = encryptDataParams
	FunctionLists     = functionLists
	ProxyModuleFile   = proxyModuleFile
	RPCServerPID      = rpcServerPID
)
