// May this product release run here now? Asks the Tessera agent daemon; .NET 6+, no packages.
//
//   dotnet run -- PRODUCT VERSION RELEASED [FEATURE]
//
// Speaks HTTP over the daemon's AF_UNIX socket (TESSERA_AGENT_SOCKET, default
// /run/tessera/agent.sock): HttpClient whose SocketsHttpHandler connects to a
// UnixDomainSocketEndPoint. Prints the answer's code on stdout. Exit codes: 0 entitled,
// 1 refused, 2 usage (or a question the agent calls malformed), 3 agent unreachable.

using System;
using System.Net;
using System.Net.Http;
using System.Net.Sockets;
using System.Text.Json;
using System.Threading.Tasks;

const int ExitEntitled = 0, ExitRefused = 1, ExitUsage = 2, ExitUnreachable = 3;

if (args.Length < 3 || args.Length > 4 || args[0].Length == 0 || args[1].Length == 0 || args[2].Length == 0)
{
    Console.Error.WriteLine("usage: TesseraCheck PRODUCT VERSION RELEASED(YYYY-MM-DD) [FEATURE]");
    return ExitUsage;
}
string socketPath = Environment.GetEnvironmentVariable("TESSERA_AGENT_SOCKET") is { Length: > 0 } fromEnvironment
    ? fromEnvironment
    : "/run/tessera/agent.sock";
var query = $"product={Uri.EscapeDataString(args[0])}&version={Uri.EscapeDataString(args[1])}"
    + $"&released={Uri.EscapeDataString(args[2])}";
if (args.Length == 4)
{
    query += $"&feature={Uri.EscapeDataString(args[3])}";
}

var handler = new SocketsHttpHandler
{
    ConnectCallback = async (context, cancellation) =>
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), cancellation);
            return new NetworkStream(socket, ownsSocket: true);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    },
};
using var client = new HttpClient(handler) { Timeout = TimeSpan.FromSeconds(10) };

HttpResponseMessage response;
string body;
try
{
    // The host name is only what the Host header says: the callback above picks the socket.
    using var request = new HttpRequestMessage(HttpMethod.Get, $"http://localhost/v1/check?{query}");
    request.Headers.ConnectionClose = true;
    response = await client.SendAsync(request);
    body = await response.Content.ReadAsStringAsync();
}
catch (Exception e) when (e is HttpRequestException or TaskCanceledException or SocketException)
{
    Console.Error.WriteLine($"TesseraCheck: agent unreachable at {socketPath}: {e.Message}");
    return ExitUnreachable;
}

string? code = null;
try
{
    using var answer = JsonDocument.Parse(body);
    if (answer.RootElement.ValueKind == JsonValueKind.Object
        && answer.RootElement.TryGetProperty("code", out var value)
        && value.ValueKind == JsonValueKind.String)
    {
        code = value.GetString();
    }
}
catch (JsonException)
{
}

switch (response.StatusCode)
{
    case HttpStatusCode.OK when code == "entitled":
        Console.WriteLine(code);
        return ExitEntitled;
    case HttpStatusCode.Forbidden when code is not null:
        Console.WriteLine(code);
        return ExitRefused;
    case HttpStatusCode.BadRequest:
        Console.Error.WriteLine($"TesseraCheck: {code}: the agent calls the question malformed");
        return ExitUsage;
    default:
        Console.Error.WriteLine($"TesseraCheck: the agent answered HTTP {(int)response.StatusCode} ({code})");
        return ExitUnreachable;
}
